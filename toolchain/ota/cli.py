"""CLI: `edgeship keys {init,rotate}`, `edgeship publish`, `edgeship repo {serve,refresh,list}`.

Errors (OtaPublishError and its kinds, exit code 2) are raised; ``runtime.cliutil.run`` reports them.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import BadInputError


def _role_ints(values: list[str] | None, flag: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for v in values or []:
        role, _, n = v.partition("=")
        if not n.isdigit():
            raise BadInputError(f"{flag} expects ROLE=N (e.g. root=2), got {v!r}")
        out[role] = int(n)
    return out


def add_keys_parser(sub) -> None:
    p = sub.add_parser("keys", help="create and rotate TUF signing keys")
    ks = p.add_subparsers(dest="keys_command", metavar="ACTION", required=True)
    i = ks.add_parser("init", help="Ed25519 keys for root/targets/snapshot/timestamp, the operator key "
                                   "(signs desired state and commands) and root.json")
    i.add_argument("--dir", required=True, help="key directory to create")
    i.add_argument("--keys", action="append", metavar="ROLE=N", help="keys per role (default 1)")
    i.add_argument("--threshold", action="append", metavar="ROLE=K", help="signatures needed (default 1)")
    i.add_argument("--root-expires-days", type=float, default=365.0)
    i.add_argument("--json", action="store_true")
    i.set_defaults(func=_keys_init)
    r = ks.add_parser("rotate", help="replace a role's key (or the operator key); root is re-signed by old "
                                     "and new root keys")
    r.add_argument("--dir", required=True, help="key directory")
    r.add_argument("--repo", required=True, help="repository directory")
    r.add_argument("--role", required=True, choices=["root", "targets", "snapshot", "timestamp", "operator"])
    r.add_argument("--keyid", help="key to replace (default: the role's first key)")
    r.add_argument("--json", action="store_true")
    r.set_defaults(func=_keys_rotate)


def _keys_init(args) -> int:
    from .keys import ROLES, RolePolicy, init_keys

    n, k = _role_ints(args.keys, "--keys"), _role_ints(args.threshold, "--threshold")
    unknown = sorted((set(n) | set(k)) - set(ROLES))
    if unknown:
        raise BadInputError(f"unknown role(s) {unknown}; roles are {list(ROLES)}")
    pol = {r: RolePolicy(keys=n.get(r, max(1, k.get(r, 1))), threshold=k.get(r, 1)) for r in ROLES}
    root = init_keys(keys_dir=args.dir, policies=pol, root_expires_days=args.root_expires_days)
    res = {"root": str(root), "roles": {r: {"keys": p.keys, "threshold": p.threshold} for r, p in pol.items()}}
    print(json.dumps(res) if args.json else
          f"keys in {args.dir} (offline: root, targets; online: snapshot, timestamp, operator)\n"
          f"provision devices with {root}")
    return 0


def _keys_rotate(args) -> int:
    from .publish import rotate_key

    old, new = rotate_key(role=args.role, repo_dir=args.repo, keys_dir=args.dir, keyid=args.keyid)
    print(json.dumps({"role": args.role, "old": old, "new": new}) if args.json
          else f"{args.role}: key {old[:12] or '(none)'} replaced by {new[:12]}; root re-signed")
    return 0


def add_publish_parser(sub) -> None:
    p = sub.add_parser("publish", help="add a bundle to a TUF repository as a signed target")
    p.add_argument("bundle", help="bundle .tar from `edgeship package`")
    p.add_argument("--repo", required=True, help="repository directory (must be one, unless --init)")
    p.add_argument("--init", action="store_true",
                   help="create the repository in --repo when it holds none yet (the first publish)")
    p.add_argument("--keys", required=True, help="key directory from `edgeship keys init`")
    p.add_argument("--expires-days", type=float, default=90.0, help="targets/snapshot expiry")
    p.add_argument("--timestamp-expires-days", type=float, default=7.0, help="timestamp expiry")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_publish)


def _publish(args) -> int:
    from .publish import publish

    res = publish(bundle=args.bundle, repo_dir=args.repo, keys_dir=args.keys,
                  expires_days=args.expires_days, timestamp_expires_days=args.timestamp_expires_days,
                  init=args.init)
    print(json.dumps(res.__dict__) if args.json else
          f"published {res.target_path} release {res.release} ({res.length} bytes, sha256 {res.sha256[:12]}); "
          f"targets v{res.targets_version}, timestamp v{res.timestamp_version}")
    return 0


def add_repo_parser(sub) -> None:
    p = sub.add_parser("repo", help="serve, refresh or list a TUF repository")
    rs = p.add_subparsers(dest="repo_command", metavar="ACTION", required=True)
    s = rs.add_parser("serve", help="static HTTP server (small setups/tests; production: any static server)")
    s.add_argument("dir")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8700)
    s.add_argument("--verbose", action="store_true")
    s.set_defaults(func=_repo_serve)
    r = rs.add_parser("refresh", help="re-sign timestamp.json with a fresh expiry (online key)")
    r.add_argument("dir")
    r.add_argument("--keys", required=True)
    r.add_argument("--timestamp-expires-days", type=float, default=7.0)
    r.add_argument("--expires-days", type=float, default=None,
                   help="also re-sign targets and snapshot with this expiry (needs the targets key): "
                        "renews a repository without publishing")
    r.set_defaults(func=_repo_refresh)
    ls = rs.add_parser("list", help="published targets")
    ls.add_argument("dir")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=_repo_list)


def _repo_serve(args) -> int:
    from .errors import RepoServeError
    from .publish import not_a_repository
    from .serve import make_server

    if not (Path(args.dir) / "metadata" / "timestamp.json").is_file():
        raise RepoServeError(not_a_repository(args.dir) + "; serve the folder `edgeship publish --repo` wrote")
    try:
        srv = make_server(args.dir, host=args.host, port=args.port, verbose=args.verbose)
    except OSError as e:
        raise RepoServeError(f"cannot listen on {args.host}:{args.port}: {e.strerror or e}; "
                             f"pick another --port") from e
    host, port = srv.server_address[:2]
    print(f"serving {args.dir} at http://{host}:{port}/ (metadata/, targets/); Ctrl-C stops", flush=True)
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        srv.server_close()
    return 0


def _repo_refresh(args) -> int:
    from .publish import refresh

    v = refresh(repo_dir=args.dir, keys_dir=args.keys, timestamp_expires_days=args.timestamp_expires_days,
                expires_days=args.expires_days)
    print(f"timestamp v{v}" + ("" if args.expires_days is None else " (targets and snapshot re-signed)"))
    return 0


def _repo_list(args) -> int:
    from .publish import list_targets

    rows = list_targets(repo_dir=args.dir)
    print(json.dumps(rows, indent=2) if args.json else format_targets(rows))
    return 0


def format_targets(rows: list[dict]) -> str:
    """`repo list` text output: a header row, then one aligned row per published target."""
    lines = [f"{'NAME':<20} {'RELEASE':<7} {'ENGINE/PRECISION':<24} {'BYTES':>10}  {'SHA256':<12}  TARGET"]
    for r in rows:
        lines.append(f"{r['name']:<20} {'r' + str(r['release']):<7} {r['engine'] + '/' + r['precision']:<24} "
                     f"{r['bytes']:>10}  {r['sha256'][:12]:<12}  {r['target']}")
    return "\n".join(lines)
