"""``twin service unit | install``: run the twin under systemd, as its own user.

Why a generated unit rather than a file in the repository: the unit names
the ``twin`` executable that is installed (a venv's path differs per host)
and the data dir, and ``install`` also makes the system user and the data
dir's ownership right, the steps people get wrong by hand.

The unit binds the privileged ports (25, 465, 587, 993, 143, 443, 80) through
``AmbientCapabilities=CAP_NET_BIND_SERVICE`` without running as root,
restarts on failure, reloads on ``systemctl reload`` (SIGHUP: certificate and
log level), stops with SIGTERM (the twin's clean stop), and logs to the
journal (stderr). The sandboxing lines are systemd's hardening for a network
daemon that only writes its data dir.
"""

from __future__ import annotations

import argparse
import os
import pwd
import shutil
import subprocess
import sys
from pathlib import Path

UNIT_PATH = Path("/etc/systemd/system/twin.service")


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("service", help="run the twin under systemd (print or install a unit)")
    actions = p.add_subparsers(dest="service_action", required=True)
    for name, text in (("unit", "print the systemd unit for this twin"),
                       ("install", "install the unit, the system user and the data dir's "
                                   "ownership; then `systemctl enable --now twin`")):
        a = actions.add_parser(name, help=text)
        a.add_argument("--user", default="twin", help="system user the twin runs as")
        a.add_argument("--exec", dest="executable", default=_executable(),
                       help="the twin executable (default: this one)")
    p.set_defaults(func=run)


def _executable() -> str:
    found = shutil.which("twin")
    here = Path(sys.executable).with_name("twin")
    return str(here if here.exists() else Path(found) if found else here)


def unit(executable: str, data: Path, user: str) -> str:
    """The unit text for ``executable`` serving ``data`` as ``user``."""
    return f"""[Unit]
Description=twin: a personal Digital Twin (mail, files, twin-to-twin)
After=network-online.target
Wants=network-online.target

[Service]
Type=exec
User={user}
Group={user}
ExecStart={executable} --data {data} serve
ExecReload=/bin/kill -HUP $MAINPID
KillSignal=SIGTERM
TimeoutStopSec=30
Restart=on-failure
RestartSec=5
Environment=PYTHONUNBUFFERED=1
LimitNOFILE=65536
AmbientCapabilities=CAP_NET_BIND_SERVICE
CapabilityBoundingSet=CAP_NET_BIND_SERVICE
NoNewPrivileges=true
ProtectSystem=strict
ProtectHome=read-only
PrivateTmp=true
PrivateDevices=true
ProtectKernelTunables=true
ProtectKernelModules=true
ProtectControlGroups=true
RestrictSUIDSGID=true
ReadWritePaths={data}

[Install]
WantedBy=multi-user.target
"""


def run(args: argparse.Namespace) -> int:
    data = Path(args.data).expanduser().resolve()
    text = unit(args.executable, data, args.user)
    if args.service_action == "unit":
        print(text, end="")
        return 0
    if os.geteuid() != 0:
        print("twin: `service install` writes /etc/systemd/system and makes a system user: "
              "run it as root (or use `twin service unit` and install it yourself)",
              file=sys.stderr)
        return 2
    try:
        pwd.getpwnam(args.user)
    except KeyError:
        subprocess.run(["useradd", "--system", "--home-dir", str(data), "--shell",
                        "/usr/sbin/nologin", args.user], check=True)
    record = pwd.getpwnam(args.user)
    for root, dirs, files in os.walk(data):
        for name in [root, *(os.path.join(root, n) for n in dirs + files)]:
            os.chown(name, record.pw_uid, record.pw_gid)
    UNIT_PATH.write_text(text)
    print(f"wrote {UNIT_PATH}; {data} now belongs to {args.user}")
    if shutil.which("systemctl"):
        subprocess.run(["systemctl", "daemon-reload"], check=False)
        print("start it with: systemctl enable --now twin   (logs: journalctl -u twin)")
    return 0
