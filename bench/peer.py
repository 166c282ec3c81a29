"""The peer: LiteLLM's proxy with its `azure_ai/agents/<assistant id>` route, in a venv of its own.

Never a project dependency. Installed pinned (1.109.1; never the compromised 1.107.0): its wheel
without dependencies, then its requirements (base and `proxy` extra) read from the wheel's METADATA,
with certifi pinned to what the registry has (1.109.1 asks for a newer one).
"""

from __future__ import annotations

import re
import subprocess
import sys
import zipfile
from pathlib import Path

VERSION = "1.109.1"
HERE = Path(__file__).resolve().parent
VENV = HERE / ".litellm-venv"
PINS = {"certifi": "certifi==2026.10.18", "litellm-proxy-extras": "litellm-proxy-extras==0.4.110"}


def python() -> Path:
    return VENV / "bin" / "python"


def installed() -> bool:
    if not python().exists():
        return False
    done = subprocess.run([str(python()), "-c", "import litellm.proxy.proxy_server"], capture_output=True)
    return done.returncode == 0


def _requirements(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        metadata = archive.read(name).decode()
    wanted: list[str] = []
    for line in metadata.splitlines():
        if not line.startswith("Requires-Dist: "):
            continue
        spec, _, marker = line.removeprefix("Requires-Dist: ").partition(";")
        marker = marker.strip()
        if "extra ==" in marker and "'proxy'" not in marker:
            continue
        marker = re.sub(r"\s*and\s*extra == 'proxy'|extra == 'proxy'\s*(and\s*)?", "", marker).strip()
        base = re.split(r"[<>=!~\[ ;]", spec.strip(), maxsplit=1)[0].lower()
        spec = PINS.get(base, spec.strip())
        wanted.append(f"{spec} ; {marker}" if marker else spec)
    wanted += [pin for name, pin in PINS.items() if not any(w.lower().startswith(name) for w in wanted)]
    return wanted


def install(log: Path) -> None:
    """Build the peer's venv (idempotent); raises CalledProcessError with the log on failure."""
    if installed():
        return
    with log.open("w") as out:
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True, stdout=out, stderr=out)
        pip = [str(python()), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
        wheels = HERE / ".litellm-wheels"
        subprocess.run(
            [str(python()), "-m", "pip", "download", "-q", "--no-deps", "-d", str(wheels), f"litellm=={VERSION}"],
            check=True,
            stdout=out,
            stderr=out,
        )
        wheel = next(wheels.glob(f"litellm-{VERSION}-*.whl"))
        requirements = HERE / ".litellm-requirements.txt"
        requirements.write_text("\n".join(_requirements(wheel)) + "\n")
        subprocess.run([*pip, "-r", str(requirements)], check=True, stdout=out, stderr=out)
        subprocess.run([*pip, "--no-deps", str(wheel)], check=True, stdout=out, stderr=out)


if __name__ == "__main__":
    install(HERE / ".litellm-install.log")
    print("installed" if installed() else "not installed")
