"""Raw data from the ISMRMRD project's own tools (Debian's ismrmrd-tools): the Shepp-Logan
generator writes acquisitions whose direction vectors are all zero. They reconstruct with a
default axial orientation and a warning in the verdict, through ``inspect`` and through the
MRD listener, and match ``ismrmrd_recon_cartesian_2d``'s images."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio.to_thread
import h5py  # type: ignore[import-untyped]
import ismrmrd
import numpy as np
import pytest

from agent.operator.inspect import run as inspect_run
from agent.qc.protocols import load_protocols
from agent.recon.mrd_file import reconstruct_file
from tests.support.agent_proc import AgentProcess
from tests.support.mrd_streams import send_stream
from tests.support.peers import free_port, require_tool, wait_for_port

GENERATE = "ismrmrd_generate_cartesian_shepp_logan"
RECON = "ismrmrd_recon_cartesian_2d"
SIZE = ["-m", "128", "-c", "4"]  # the tools' defaults are 256 and 8 coils; smaller is quicker
VARIANTS = {"full": [], "grappa": ["-a", "2", "-w", "24", "-C"]}
WARNING = "recon.default_orientation"


def generate(folder: Path, name: str) -> Path:
    out = folder / f"{name}.h5"
    subprocess.run([require_tool(GENERATE), *SIZE, *VARIANTS[name], "-o", str(out)],
                   check=True, capture_output=True, cwd=folder)  # fmt: skip
    return out


def reference_image(path: Path) -> np.ndarray:
    """What ismrmrd_recon_cartesian_2d makes of the file (it writes into the file: a copy)."""
    copy = path.with_name(path.stem + "-ref.h5")
    shutil.copy(path, copy)
    subprocess.run([require_tool(RECON), str(copy)], check=True, capture_output=True)
    with h5py.File(copy, "r") as f:
        data = np.asarray(f["dataset/cpp/data"], dtype=np.float64)
    return data.reshape(data.shape[-2:])


def nrmse(image: np.ndarray, ref: np.ndarray) -> float:
    """Root-mean-square error relative to the reference, after the best intensity scale
    (our pixels are scaled to uint16, the tool's are raw magnitudes)."""
    a = image.astype(np.float64)
    scale = float((a * ref).sum() / (a * a).sum())
    return float(np.linalg.norm(scale * a - ref) / np.linalg.norm(ref))


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("ismrmrd")
    return {name: generate(folder, name) for name in VARIANTS}


def test_generator_writes_no_orientation(files: dict[str, Path]) -> None:
    """The premise: every acquisition's direction vectors are zero."""
    with ismrmrd.Dataset(str(files["full"]), "dataset", create_if_needed=False) as dset:
        acq = dset.read_acquisition(0)
    assert not any(acq.read_dir) and not any(acq.phase_dir) and not any(acq.slice_dir)


@pytest.mark.parametrize("name", list(VARIANTS))
def test_inspect_reconstructs_with_a_warning(files: dict[str, Path], name: str) -> None:
    out, err = io.StringIO(), io.StringIO()
    assert inspect_run([files[name]], load_protocols(), as_json=True, out=out, err=err) == 0, (
        err.getvalue()
    )
    (verdict,) = [json.loads(line) for line in out.getvalue().splitlines()]
    assert verdict["modality"] == "MR"
    assert verdict["instances"] == (1 if name == "full" else 2)  # -a 2 writes two repetitions
    assert verdict["qc"]["status"] in ("warn", "fail")
    codes = [r["code"] for r in verdict["qc"]["reasons"]]
    assert WARNING in codes


def test_fully_sampled_matches_the_reference_recon(files: dict[str, Path]) -> None:
    (ds,) = reconstruct_file(files["full"])
    assert [float(v) for v in ds.ImageOrientationPatient] == [1, 0, 0, 0, 1, 0]
    assert nrmse(ds.pixel_array, reference_image(files["full"])) < 0.01  # measured 0.0005


def test_grappa_matches_the_reference_recon(files: dict[str, Path]) -> None:
    """ismrmrd_recon_cartesian_2d fills one buffer from both interleaved repetitions; the
    agent reconstructs each repetition by GRAPPA from half the lines, so the difference is
    mostly noise (measured 0.14 to 0.16). An image left aliased or transposed is above 0.5."""
    ref = reference_image(files["grappa"])
    images = reconstruct_file(files["grappa"])
    assert len(images) == 2
    for ds in images:
        assert "GRAPPA R=2" in ds.DerivationDescription
        assert nrmse(ds.pixel_array, ref) < 0.25
        assert nrmse(ds.pixel_array, ref.T) > 0.5


def stream_of(path: Path, *, keep_last_flag: bool = True) -> tuple[Any, list[Any]]:
    with ismrmrd.Dataset(str(path), "dataset", create_if_needed=False) as dset:
        xml = dset.read_xml_header()
        acqs = [dset.read_acquisition(i) for i in range(dset.number_of_acquisitions())]
    if not keep_last_flag:
        for acq in acqs:
            acq.clear_flag(ismrmrd.ACQ_LAST_IN_SLICE)
    text = xml.decode() if isinstance(xml, bytes) else str(xml)
    return ismrmrd.xsd.CreateFromDocument(text), acqs


@pytest.fixture
def mrd_agent(agent_factory: Any) -> Iterator[tuple[AgentProcess, int]]:
    port = free_port()
    agent = agent_factory(
        mrd={"bind": "127.0.0.1", "port": port}, qc={"enabled": True},
        series={"idle_timeout_s": {"default": 2}},  # the generator's header gives no count
    ).start()  # fmt: skip
    wait_for_port(port, 180)
    yield agent, port


def feed(agent: AgentProcess) -> list[dict[str, Any]]:
    path = agent.storage / "feed.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


@pytest.mark.integration
@pytest.mark.anyio
@pytest.mark.parametrize("name", list(VARIANTS))
async def test_listener_reconstructs_and_warns(
    mrd_agent: tuple[AgentProcess, int], files: dict[str, Path], name: str
) -> None:
    agent, port = mrd_agent
    hdr, acqs = stream_of(files[name])
    images = await anyio.to_thread.run_sync(lambda: send_stream(port, hdr, acqs))
    assert len(images) == (1 if name == "full" else 2)
    agent.wait_for("SELECT state FROM series", lambda r: len(r) == 1 and r[0][0] != "receiving", 60)
    verdict = await anyio.to_thread.run_sync(wait_feed, agent, "scanner-agent.verdict/1")
    assert WARNING in [r["code"] for r in verdict["qc"]["reasons"]]
    assert verdict["qc"]["status"] in ("warn", "fail")


def wait_feed(agent: AgentProcess, text: str, timeout: float = 60.0) -> dict[str, Any]:
    """The payload of the first feed line whose topic or payload mentions ``text``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in feed(agent):
            if line.get("payload") and text in json.dumps(line):
                return dict(line["payload"])
        time.sleep(0.05)
    raise AssertionError(f"nothing with {text!r} in the feed\n{agent.log()[-3000:]}")


@pytest.mark.integration
@pytest.mark.anyio
async def test_stream_without_an_image_raises_an_alert(
    mrd_agent: tuple[AgentProcess, int], files: dict[str, Path]
) -> None:
    agent, port = mrd_agent
    hdr, acqs = stream_of(files["full"], keep_last_flag=False)
    images = await anyio.to_thread.run_sync(lambda: send_stream(port, hdr, acqs))
    assert images == []
    alert = await anyio.to_thread.run_sync(wait_feed, agent, "mrd.no-image")
    assert "no slice was complete" in alert["reasons"][0]["message"]
    assert "ACQ_LAST_IN_SLICE" in alert["reasons"][0]["message"]
