"""The `studio` console command.

`studio --host 0.0.0.0 --port 8189 --share --no-auth --data-dir DIR` runs the studio: flags
only set the matching environment variables, so Settings stays the one place that reads
configuration; then app.py is run as a script.

`studio users add NAME [--admin] | remove NAME | passwd NAME | list` manages who may sign
in. A password is read from a prompt (twice) at a terminal, else one line from stdin;
never from the command line. Only the database is opened: no backend is contacted.

`studio backup DEST` copies the data folder (safe while the studio runs) into a new folder,
or a .tar.gz when DEST ends so; `studio restore SRC [--force]` checks a backup and puts it
into a stopped studio's (or a new) data folder. Both take `--data-dir`.
"""

from __future__ import annotations

import argparse
import getpass
import os
import runpy
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["users"]:
        raise SystemExit(users_main(argv[1:]))
    if argv[:1] == ["keys"]:
        raise SystemExit(keys_main(argv[1:]))
    if argv[:1] == ["backup"]:
        raise SystemExit(backup_main(argv[1:]))
    if argv[:1] == ["restore"]:
        raise SystemExit(backup_main(argv[1:], restore=True))
    parser = argparse.ArgumentParser(prog="studio", description="Run Hephaestus Studio.")
    parser.add_argument("--host", help="address to bind (0.0.0.0 for the LAN; default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (default 8189)")
    parser.add_argument("--share", action="store_true", help="also open a Gradio share link")
    parser.add_argument("--no-auth", action="store_true",
                        help="run without sign-in even when reachable from other machines")
    parser.add_argument("--data-dir", help="where the database and files live")
    args = parser.parse_args(argv)
    if args.host:
        os.environ["GRADIO_SERVER_NAME"] = args.host
    if args.port:
        os.environ["GRADIO_SERVER_PORT"] = str(args.port)
    if args.share:
        os.environ["STUDIO_SHARE"] = "true"
    if args.no_auth:
        os.environ["STUDIO_NO_AUTH"] = "true"
    if args.data_dir:
        os.environ["STUDIO_DATA_DIR"] = args.data_dir
    app_path = Path(__file__).resolve().parent.parent / "app.py"
    os.chdir(app_path.parent)
    runpy.run_path(str(app_path), run_name="__main__")


def users_main(argv: list[str]) -> int:
    """`studio users ...`; returns the exit status (2 with one sentence on stderr on error)."""
    from .access.audit import Audit
    from .access.users import Users
    from .config import Settings
    from .errors import StudioError
    from .store.db import Store

    parser = argparse.ArgumentParser(prog="studio users", description="Who may sign in.")
    parser.add_argument("--data-dir", help="where the database lives")
    verbs = parser.add_subparsers(dest="verb", required=True)
    add = verbs.add_parser("add", help="add a person (asks for a password)")
    add.add_argument("name")
    add.add_argument("--admin", action="store_true", help="may manage models, files, users")
    add.add_argument("--data-dir", dest="data_dir_", help=argparse.SUPPRESS)
    for verb, text in (("remove", "remove a person"), ("passwd", "set a new password")):
        sub = verbs.add_parser(verb, help=text)
        sub.add_argument("name")
        sub.add_argument("--data-dir", dest="data_dir_", help=argparse.SUPPRESS)
    listing = verbs.add_parser("list", help="who may sign in")
    listing.add_argument("--data-dir", dest="data_dir_", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    data_dir = getattr(args, "data_dir_", None) or args.data_dir
    if data_dir:
        os.environ["STUDIO_DATA_DIR"] = data_dir
    try:
        settings = Settings.from_env()
        store = Store.open(settings.db_path)
        users = Users(store)
        audit = Audit(store, keep_days=settings.audit_days)
        if args.verb == "list":
            people = users.list()
            if not people:
                print("No users yet: sign-in is off. Add one with `studio users add NAME --admin`.")
            for user in people:
                print(f"{user.name}\t{user.role}")
        elif args.verb == "add":
            first = users.count() == 0
            user = users.add(args.name, read_password(args.name), admin=args.admin)
            audit.record("cli", "add user", f"{user.name} ({user.role})")
            print(f"Added {user.name} ({user.role})."
                  + (" Sign-in is now on; restart the studio if it runs on another address."
                     if first else ""))
        elif args.verb == "remove":
            users.remove(args.name)
            audit.record("cli", "remove user", args.name)
            print(f"Removed {args.name}; their sessions ended. What they made is kept.")
        elif args.verb == "passwd":
            users.set_password(args.name, read_password(args.name))  # ends their sessions
            audit.record("cli", "set password", args.name)
            print(f"New password set for {args.name}; their sessions ended.")
    except StudioError as exc:
        print(f"studio users: {exc}", file=sys.stderr)
        return 2
    return 0


def keys_main(argv: list[str]) -> int:
    """`studio keys add USER NAME | list USER | revoke USER ID`: API keys for /v1."""
    from .access.keys import ApiKeys
    from .access.users import Users
    from .config import Settings
    from .errors import InvalidInput, StudioError
    from .store.db import Store

    parser = argparse.ArgumentParser(prog="studio keys", description="API keys for /v1.")
    parser.add_argument("--data-dir", help="where the database lives")
    verbs = parser.add_subparsers(dest="verb", required=True)
    add = verbs.add_parser("add", help="make a key (printed once)")
    add.add_argument("user")
    add.add_argument("name", help="what uses it, e.g. laptop")
    listing = verbs.add_parser("list", help="a user's keys")
    listing.add_argument("user")
    revoke = verbs.add_parser("revoke", help="revoke a key by its id")
    revoke.add_argument("user")
    revoke.add_argument("id", type=int)
    args = parser.parse_args(argv)
    if args.data_dir:
        os.environ["STUDIO_DATA_DIR"] = args.data_dir
    try:
        store = Store.open(Settings.from_env().db_path)
        if Users(store).get(args.user) is None:
            raise InvalidInput(f"There is no user called {args.user}.",
                               hint="`studio users add NAME` first.")
        keys = ApiKeys(store)
        if args.verb == "add":
            key, secret = keys.create(args.user, args.name)
            print(f"Key {key.id} ({key.name}) for {args.user}; it is shown only now:\n{secret}")
        elif args.verb == "list":
            for key in keys.list(args.user):
                state = "revoked" if key.revoked else f"last used {key.last_used or 'never'}"
                print(f"{key.id}\t{key.name}\t{key.prefix}…\t{state}")
        elif not keys.revoke(args.user, args.id):
            raise InvalidInput(f"{args.user} has no live key {args.id}.")
        else:
            print(f"Revoked key {args.id} of {args.user}.")
    except StudioError as exc:
        print(f"studio keys: {exc}", file=sys.stderr)
        return 2
    return 0


def backup_main(argv: list[str], *, restore: bool = False) -> int:
    """`studio backup DEST` or (``restore``) `studio restore SRC [--force]`; returns 0 after
    a summary on stdout, or 2 with one sentence on stderr."""
    from .config import Settings
    from .errors import StudioError
    from .ops.backup import make_backup, restore_backup

    prog = "studio restore" if restore else "studio backup"
    parser = argparse.ArgumentParser(prog=prog, description=(
        "Put a backup into a stopped studio's data folder." if restore
        else "Back up the data folder; safe while the studio runs."))
    if restore:
        parser.add_argument("path", metavar="SRC",
                            help="a backup folder or .tar.gz made by `studio backup`")
        parser.add_argument("--force", action="store_true",
                            help="restore even though a studio seems to run on the folder")
    else:
        parser.add_argument("path", metavar="DEST",
                            help="a new folder, or a file name ending in .tar.gz")
    parser.add_argument("--data-dir", help="the data folder (default: STUDIO_DATA_DIR)")
    args = parser.parse_args(argv)
    if args.data_dir:
        os.environ["STUDIO_DATA_DIR"] = args.data_dir
    try:
        data = Settings.from_env().data_path
        if restore:
            restored = restore_backup(args.path, data, force=args.force)
            lines = [f"Restored {restored.files} files into {restored.data_dir}."]
            if restored.set_aside:
                lines.append(f"What the folder held before is in {restored.set_aside}; delete "
                             "it once the studio looks right.")
            lines.append("Start the studio: it brings the database up to date as it starts.")
        else:
            made = make_backup(data, args.path)
            lines = [f"Backed up {made.files} files ({made.bytes / 1e6:.1f} MB) into {made.path}."]
            if made.skipped:
                lines.append(f"{len(made.skipped)} files were deleted while being copied and "
                             "are not in it.")
    except StudioError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 2
    print("\n".join(lines))
    return 0


def read_password(name: str) -> str:
    """From a prompt (asked twice) at a terminal, else one line of stdin."""
    if sys.stdin.isatty():
        first = getpass.getpass(f"Password for {name}: ")
        if getpass.getpass("Again: ") != first:
            from .errors import InvalidInput
            raise InvalidInput("The two passwords differ.", hint="Run the command again.")
        return first
    return sys.stdin.readline().rstrip("\r\n")


if __name__ == "__main__":
    main()
