"""``scanner-agent web-user add|list|remove``: the web console's accounts (agent/web/users.py).

A running agent sees the change at the next request; nothing needs a restart.
"""

from __future__ import annotations

import argparse
import getpass
import sys
import time
from typing import Any

from agent.config import load_config
from agent.web.users import ROLES, UserError, UserStore


def add_verbs(sub: argparse._SubParsersAction[argparse.ArgumentParser], config_arg: Any) -> None:
    verb = sub.add_parser("web-user", help="accounts for the web console: add, list, remove")
    config_arg(verb)
    verb.add_argument("action", choices=["add", "list", "remove"])
    verb.add_argument("name", nargs="?", help="the login name (add, remove)")
    verb.add_argument("--role", choices=ROLES, help="add: what the account may do")
    verb.add_argument(
        "--password-stdin", action="store_true", help="add: read the password from stdin"
    )
    verb.set_defaults(func=cmd_web_user)


def cmd_web_user(args: argparse.Namespace) -> int:
    store = UserStore.for_storage(load_config(args.config).storage_path)
    if args.action == "list":
        if not store.users():
            print(f"no web users in {store.path}: scanner-agent web-user add NAME --role ROLE")
        for user in sorted(store.users().values(), key=lambda u: u.name):
            created = time.strftime("%Y-%m-%d %H:%M", time.localtime(user.created))
            print(f"{user.name:24} {user.role:13} added {created}")
        return 0
    if not args.name:
        raise UserError(f"web-user {args.action}: NAME is required")
    if args.action == "remove":
        store.remove(args.name)
        print(f"removed web user {args.name}")
        return 0
    if args.role is None:
        raise UserError("web-user add: --role technologist|radiologist|admin is required")
    user = store.add(args.name, args.role, _password(args.password_stdin))
    print(f"added web user {user.name} ({user.role})")
    return 0


def _password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass("password: ")
    if getpass.getpass("again: ") != first:
        raise UserError("the two passwords differ")
    return first
