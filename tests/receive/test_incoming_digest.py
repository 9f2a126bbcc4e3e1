"""The sha256 that IncomingFile computes while fragments are written is the one
spool.hash_dataset reads back from the file (the data set's bytes, after the file meta),
whatever the fragment sizes; a file that does not start with a file meta gets none."""

from __future__ import annotations

import random
from pathlib import Path

from agent.receive import incoming
from agent.receive.spool import hash_dataset
from tests.support.dicom_factory import write_ct_series


def stream(folder: Path, data: bytes, seed: int) -> incoming.IncomingFile:
    rng = random.Random(seed)
    f = incoming.IncomingFile(folder, 1 << 30, "w1-")
    at = 0
    while at < len(data):  # fragments of 1 byte to 64 KiB, the meta split anywhere
        n = rng.choice([1, 7, 100, 143, 1000, 65536])
        f.write(data[at : at + n])
        at += n
    f.close()
    return f


def test_digest_in_flight_matches_the_file(tmp_path: Path) -> None:
    data = write_ct_series(tmp_path / "ct", 1)[0].read_bytes()
    for seed in range(20):
        f = stream(tmp_path, data, seed)
        assert Path(f.name).name.startswith("w1-")
        assert incoming.digest(f.name) == hash_dataset(Path(f.name))
        Path(f.name).unlink()


def test_no_digest_without_a_file_meta(tmp_path: Path) -> None:
    f = stream(tmp_path, b"\x01" * 5000, 0)
    assert incoming.digest(f.name) is None
    assert incoming.remove_leftovers(tmp_path, 1) == 1
    assert not Path(f.name).exists()
