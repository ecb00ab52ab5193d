"""Run commands inside a built image's root filesystem the way a pod runs its container.

Without a container engine: ``buildah from`` + ``buildah mount`` give the image's root filesystem;
each command then runs in its own mount namespace (``unshare -m``) with that root bind-mounted
read-only, a writable ``/tmp`` (a fresh tmpfs, or a host directory standing in for the pod's
emptyDir), ``/proc``, a minimal ``/dev``, optional read-only binds (a ConfigMap's place), and is
``chroot``-ed into it as the image's user with every capability dropped and no_new_privs set
(``setpriv``, from the image's util-linux). The environment is the image's own (``Env`` of its
config) plus what the caller adds; nothing of the host's environment leaks in. The host's loopback
is the image's too. Needs root on the host, buildah, unshare and chroot.

As a script, it runs one command in an image and exits with its code:
``python tests/image/inimage.py IMAGE [--] CMD...`` (CMD empty: the image's entrypoint).
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

BUILDAH = ("buildah", "--storage-driver", "vfs")
# the devices a container runtime gives every container
DEVICES = ("null", "zero", "full", "random", "urandom")

# Runs as root inside `unshare -m`: $1 root, $2 host dir for /tmp ("" = tmpfs), $3 uid, $4 gid,
# $5 workdir, then "SRC DST" pairs of read-only binds up to "--", then env -i assignments up to
# "--", then the command.
_SETUP = r"""
set -eu
root=$1 tmp=$2 uid=$3 gid=$4 workdir=$5
shift 5
mount --bind "$root" "$root"
while [ "$1" != -- ]; do
  mkdir -p "$root$2"
  mount --bind "$1" "$root$2"
  mount -o remount,bind,ro "$root$2"
  shift 2
done
shift
mount -o remount,bind,ro "$root"
if [ -n "$tmp" ]; then
  mount --bind "$tmp" "$root/tmp"
else
  mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs "$root/tmp"
fi
mount -t proc -o nosuid,nodev,noexec proc "$root/proc"
mount -t tmpfs -o mode=0755,nosuid tmpfs "$root/dev"
for dev in DEVICES; do touch "$root/dev/$dev"; mount --bind "/dev/$dev" "$root/dev/$dev"; done
exec chroot "$root" /usr/bin/setpriv --reuid="$uid" --regid="$gid" --clear-groups \
  --inh-caps=-all --bounding-set=-all --no-new-privs /usr/bin/env -i -C "$workdir" "$@"
""".replace("DEVICES", " ".join(DEVICES))


class ImageError(RuntimeError):
    """The image cannot be opened (not built, no buildah, or its config lacks what a run needs)."""


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Image:
    """A built image, mounted: its root filesystem and the parts of its config a run uses."""

    name: str
    container: str
    root: Path
    env: dict[str, str]
    entrypoint: tuple[str, ...]
    uid: int
    gid: int
    workdir: str


def _buildah(*args: str) -> str:
    result = subprocess.run([*BUILDAH, *args], capture_output=True, text=True, timeout=600, check=False)
    if result.returncode != 0:
        raise ImageError(f"buildah {' '.join(args)}: {result.stderr.strip()}")
    return result.stdout.strip()


def open_image(name: str) -> Image:
    """Return ``name`` mounted through a new working container; raises ImageError if it cannot be."""
    config = json.loads(_buildah("inspect", "--type", "image", name)).get("OCIv1", {}).get("config", {})
    user = str(config.get("User", ""))
    uid, _, gid = user.partition(":")
    if not uid.isdigit() or not (gid or uid).isdigit():
        raise ImageError(f"{name}: USER must be a numeric uid[:gid], got {user!r}")
    env = dict(item.partition("=")[::2] for item in config.get("Env", []))
    container = _buildah("from", "--pull-never", "--quiet", name)
    try:
        root = Path(_buildah("mount", container))
    except ImageError:
        _buildah("rm", container)
        raise
    return Image(
        name=name,
        container=container,
        root=root,
        env=env,
        entrypoint=tuple(config.get("Entrypoint") or ()),
        uid=int(uid),
        gid=int(gid or uid),
        workdir=str(config.get("WorkingDir") or "/"),
    )


def close_image(image: Image) -> None:
    """Unmount and remove the working container of ``image``."""
    _buildah("umount", image.container)
    _buildah("rm", image.container)


def command(
    image: Image,
    argv: Sequence[str],
    *,
    tmp: Path | None = None,
    binds: Mapping[Path, str] | None = None,
    env: Mapping[str, str] | None = None,
) -> list[str]:
    """Return the host argv that runs ``argv`` in ``image`` (as its user, read-only root, no capabilities).

    ``tmp``: a host directory mounted at /tmp (owned by the image's user; default: a fresh tmpfs);
    ``binds``: host path -> path in the image, mounted read-only; ``env``: added to the image's Env.
    """
    pairs = [str(p) for src, dst in (binds or {}).items() for p in (Path(src).resolve(), dst)]
    assignments = [f"{k}={v}" for k, v in {**image.env, **(env or {})}.items()]
    return [
        "unshare",
        "--mount",
        "sh",
        "-c",
        _SETUP,
        "sh",
        str(image.root),
        str(tmp or ""),
        str(image.uid),
        str(image.gid),
        image.workdir,
        *pairs,
        "--",
        *assignments,
        *argv,
    ]


def owned_tmp(image: Image, path: Path) -> Path:
    """Create ``path`` as a writable /tmp for ``image``'s user (as a pod's emptyDir is) and return it."""
    path.mkdir(parents=True, exist_ok=True)
    os.chown(path, image.uid, image.gid)
    path.chmod(0o700)
    return path


def main(argv: Sequence[str]) -> int:
    """Run one command in an image (the rest of ``argv`` after the image name); return its exit code."""
    if not argv:
        print("usage: inimage.py IMAGE [--] [CMD...]", file=sys.stderr)
        return 2
    name, rest = argv[0], list(argv[1:])
    if rest[:1] == ["--"]:
        rest = rest[1:]
    image = open_image(name)
    try:
        return subprocess.run(command(image, rest or list(image.entrypoint)), check=False).returncode
    finally:
        close_image(image)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
