"""Static checks of the ROS 2 package (package.xml, CMakeLists.txt, setup.py) without ROS.

The CMake check configures and installs CMakeLists.txt against small stand-ins for
ament_cmake / ament_cmake_python / rosidl that install the generated Python package the way
rosidl_generator_py does on Humble and Jazzy (empty facebot/__init__.py, facebot/msg/,
typesupport modules, via ament_python_install_package, whose targets collide on a second call
for the same name: ros2/rosidl_python#141).
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import facebot

ROOT = Path(__file__).resolve().parents[1]
CMAKE = ROOT / "CMakeLists.txt"
SYSTEM_PYTHON = "/usr/bin/python3"

# find_package() names that are CMake/system modules, not ROS packages
NON_ROS_FIND_PACKAGES = {"Python3", "PythonInterp", "Threads"}


def _cmake_code() -> str:
    """CMakeLists.txt without comments (so a comment citing a call does not count as one)."""
    lines = []
    for line in CMAKE.read_text().splitlines():
        lines.append(re.sub(r"#.*$", "", line) if '"' not in line.split("#")[0] else line)
    return "\n".join(lines)


def _calls(code: str, name: str) -> list[str]:
    return [m.group(1) for m in re.finditer(rf"\b{name}\s*\(([^)]*)\)", code, re.I)]


# ------------------------------------------------------------------------------------------
# package.xml


def _package_xml() -> dict:
    if not Path(SYSTEM_PYTHON).exists():
        pytest.skip(f"{SYSTEM_PYTHON} not found")
    code = textwrap.dedent(
        """
        import json, sys
        from catkin_pkg.package import parse_package
        p = parse_package(sys.argv[1])
        p.validate()
        deps = {k: sorted(d.name for d in getattr(p, k)) for k in (
            'buildtool_depends', 'build_depends', 'build_export_depends', 'exec_depends',
            'test_depends')}
        print(json.dumps(dict(
            format=p.package_format, name=p.name, version=p.version, licenses=list(p.licenses),
            build_type=p.get_build_type(), groups=[g.name for g in p.member_of_groups], **deps)))
        """
    )
    res = subprocess.run([SYSTEM_PYTHON, "-c", code, str(ROOT / "package.xml")],
                         capture_output=True, text=True)
    if res.returncode and "No module named 'catkin_pkg'" in res.stderr:
        reason = f"{SYSTEM_PYTHON} lacks catkin_pkg (Debian python3-catkin-pkg)"
        print(f"SKIP: {reason}")
        pytest.skip(reason)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def test_package_xml_is_a_format3_interface_package():
    pkg = _package_xml()
    assert pkg["format"] == 3
    assert pkg["name"] == "facebot"
    assert pkg["version"] == facebot.__version__
    assert pkg["licenses"] == ["Apache-2.0"]
    assert pkg["build_type"] == "ament_cmake"
    assert "rosidl_interface_packages" in pkg["groups"]
    assert {"ament_cmake", "ament_cmake_python", "rosidl_default_generators"} <= set(pkg["buildtool_depends"])
    assert {"rosidl_default_runtime", "rclpy", "std_msgs", "builtin_interfaces", "python3-numpy",
            "launch_ros", "lifecycle_msgs"} <= set(pkg["exec_depends"])
    # <depend> is build + build_export + exec
    assert {"std_msgs", "builtin_interfaces"} <= set(pkg["build_depends"]) & set(pkg["exec_depends"])


def test_every_find_package_is_declared_in_package_xml():
    pkg = _package_xml()
    declared = set().union(*(pkg[k] for k in ("buildtool_depends", "build_depends", "exec_depends",
                                               "test_depends")))
    found = {args.split()[0] for args in _calls(_cmake_code(), "find_package")}
    assert found, "no find_package() calls found"
    missing = sorted(found - declared - NON_ROS_FIND_PACKAGES)
    assert not missing, f"find_package()'d but not in package.xml: {missing}"
    # everything the interfaces depend on is a build dependency too
    deps = re.search(r"DEPENDENCIES([^)]*)\)", _cmake_code()).group(1).split()
    assert set(deps) <= set(pkg["build_depends"])


# ------------------------------------------------------------------------------------------
# CMakeLists.txt (text)


def test_cmake_generates_every_msg_file():
    code = _cmake_code()
    listed = set(re.findall(r'"?(msg/[A-Za-z0-9_]+\.msg)"?', code))
    on_disk = {f"msg/{p.name}" for p in (ROOT / "msg").glob("*.msg")}
    assert on_disk and listed == on_disk
    (gen,) = _calls(code, "rosidl_generate_interfaces")
    assert gen.split()[0] == "${PROJECT_NAME}"
    assert re.search(r"DEPENDENCIES\s+builtin_interfaces\s+std_msgs|DEPENDENCIES\s+std_msgs\s+builtin_interfaces", gen)


def test_cmake_never_installs_the_python_package_twice():
    code = _cmake_code()
    for args in _calls(code, "ament_python_install_package"):
        first = args.split()[0] if args.split() else ""
        assert first not in {"${PROJECT_NAME}", "facebot"}, (
            "ament_python_install_package(facebot) collides with rosidl's own install "
            "(ros2/rosidl_python#141)")
    assert "rosidl_python#141" in CMAKE.read_text()  # the reason is documented


def test_cmake_structure():
    code = _cmake_code()
    assert re.search(r"project\(\s*facebot\s*\)", code)  # C/C++ enabled: rosidl compiles typesupport
    assert _calls(code, "ament_export_dependencies") == ["rosidl_default_runtime"]
    calls = re.findall(r"\b([A-Za-z_]+)\s*\(", code)
    assert calls[-1] == "ament_package"
    gen = code.index("rosidl_generate_interfaces(")
    py_install = code.index('DESTINATION "${PYTHON_INSTALL_DIR}/${PROJECT_NAME}"')
    assert gen < py_install, "our Python install must come after rosidl's (its __init__.py wins)"


def _facebot_nodes() -> list[str]:
    m = re.search(r"set\(\s*FACEBOT_NODES\b([^)]*)\)", _cmake_code())
    assert m, "FACEBOT_NODES list not found"
    return m.group(1).split()


def test_every_listed_node_module_has_main():
    for node in _facebot_nodes():
        path = ROOT / "facebot" / "nodes" / f"{node}.py"
        assert path.is_file(), f"FACEBOT_NODES lists {node} but {path} is missing"
        assert re.search(r"^def main\(", path.read_text(), re.M), f"{path} has no main()"


# ------------------------------------------------------------------------------------------
# CMakeLists.txt (configure + install against stand-ins)

STUBS = {
    "ament_cmake": """
        macro(ament_export_dependencies)
          set_property(GLOBAL APPEND PROPERTY FB_EXPORTED ${ARGN})
        endmacro()
        macro(ament_package)
          get_property(_exp GLOBAL PROPERTY FB_EXPORTED)
          file(WRITE "${CMAKE_BINARY_DIR}/ament_package_called" "${_exp}")
        endmacro()
    """,
    "ament_cmake_python": """
        set(PYTHON_INSTALL_DIR "lib/python3/site-packages")
        # like the real one: fixed target names, so a second call for a name fails (#141)
        function(ament_python_install_package package_name)
          cmake_parse_arguments(ARG "" "PACKAGE_DIR" "" ${ARGN})
          add_custom_target(ament_cmake_python_symlink_${package_name})
          add_custom_target(ament_cmake_python_build_${package_name}_egg ALL)
          install(DIRECTORY "${ARG_PACKAGE_DIR}/"
            DESTINATION "${PYTHON_INSTALL_DIR}/${package_name}"
            PATTERN "*.pyc" EXCLUDE PATTERN "__pycache__" EXCLUDE)
        endfunction()
    """,
    "rosidl_default_generators": """
        find_package(ament_cmake_python REQUIRED)
        # like rosidl_generator_py (Humble/Jazzy): empty package __init__.py, msg/ subpackage,
        # typesupport modules at the package root, installed by ament_python_install_package
        macro(rosidl_generate_interfaces target)
          cmake_parse_arguments(_FB "" "" "DEPENDENCIES" ${ARGN})
          set(_out "${CMAKE_CURRENT_BINARY_DIR}/rosidl_generator_py/${PROJECT_NAME}")
          file(WRITE "${_out}/__init__.py" "")
          file(WRITE "${_out}/msg/__init__.py" "# generated\\n")
          file(WRITE "${_out}/${PROJECT_NAME}_s__rosidl_typesupport_c.so" "")
          foreach(_f ${_FB_UNPARSED_ARGUMENTS})
            get_filename_component(_n "${_f}" NAME_WE)
            file(WRITE "${_out}/msg/_${_n}.py" "# generated\\n")
            install(FILES "${_f}" DESTINATION "share/${PROJECT_NAME}/msg")
          endforeach()
          add_custom_target(${target} ALL)
          ament_python_install_package(${PROJECT_NAME} PACKAGE_DIR "${_out}")
        endmacro()
    """,
    "builtin_interfaces": "",
    "std_msgs": "",
}


def _cmake_install(tmp_path: Path, nodes: list[str] | None = None) -> Path:
    if shutil.which("cmake") is None:
        reason = "cmake not installed"
        print(f"SKIP: {reason}")
        pytest.skip(reason)
    src = tmp_path / "src"
    shutil.copytree(ROOT / "facebot", src / "facebot",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for name in ("msg", "launch", "config", "urdf"):
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, src / name)
    shutil.copy(ROOT / "package.xml", src)
    text = CMAKE.read_text()
    if nodes is not None:
        (src / "facebot" / "nodes").mkdir(exist_ok=True)
        for node in nodes:
            (src / "facebot" / "nodes" / f"{node}.py").write_text("def main():\n    return 0\n")
        text, n = re.subn(r"set\(FACEBOT_NODES\b[^)]*\)", f"set(FACEBOT_NODES {' '.join(nodes)})", text)
        assert n == 1
    (src / "CMakeLists.txt").write_text(text)
    stubs = tmp_path / "stubs"
    for pkg, body in STUBS.items():
        (stubs / pkg).mkdir(parents=True)
        (stubs / pkg / f"{pkg}Config.cmake").write_text(textwrap.dedent(body))
    build, prefix = tmp_path / "build", tmp_path / "install"
    args = [f"-D{pkg}_DIR={stubs / pkg}" for pkg in STUBS]
    res = subprocess.run(["cmake", "-S", src, "-B", build, f"-DCMAKE_INSTALL_PREFIX={prefix}", *args],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    assert (build / "ament_package_called").read_text() == "rosidl_default_runtime"
    res = subprocess.run(["cmake", "--install", build], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    return prefix


def test_cmake_install_layout(tmp_path):
    prefix = _cmake_install(tmp_path, nodes=["fake_node"])
    pkg = prefix / "lib/python3/site-packages/facebot"
    # rosidl's files are there ...
    assert (pkg / "msg" / "__init__.py").read_text() == "# generated\n"
    assert (pkg / "msg" / "_FlameParams.py").exists()
    assert (pkg / "facebot_s__rosidl_typesupport_c.so").exists()
    # ... and ours beside them; our __init__.py replaced the generated empty one
    assert (pkg / "__init__.py").read_text() == (ROOT / "facebot/__init__.py").read_text()
    for path in (ROOT / "facebot").rglob("*.py"):
        rel = path.relative_to(ROOT / "facebot")
        if "__pycache__" not in rel.parts:
            assert (pkg / rel).is_file(), rel
    assert not list(pkg.rglob("__pycache__"))
    # data and launcher
    for p in (ROOT / "msg").glob("*.msg"):
        assert (prefix / "share/facebot/msg" / p.name).is_file()
    launcher = prefix / "lib/facebot/fake_node"
    assert launcher.stat().st_mode & 0o111
    text = launcher.read_text()
    assert text.startswith("#!/usr/bin/env python3\n")
    assert "from facebot.nodes.fake_node import main" in text
    # the launcher really runs main() from the installed tree
    env = {"PYTHONPATH": str(prefix / "lib/python3/site-packages"), "PATH": "/usr/bin:/bin"}
    res = subprocess.run([sys.executable, launcher], env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr


def test_cmake_install_with_the_checked_in_node_list(tmp_path):
    prefix = _cmake_install(tmp_path)  # FACEBOT_NODES as written (possibly empty)
    nodes = _facebot_nodes()
    installed = sorted(p.name for p in (prefix / "lib/facebot").iterdir()) \
        if (prefix / "lib/facebot").is_dir() else []
    assert installed == sorted(nodes)


# ------------------------------------------------------------------------------------------
# setup.py


def test_setup_py_metadata():
    res = subprocess.run([sys.executable, "setup.py", "--name", "--version"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split()[-2:] == ["facebot", facebot.__version__]
    text = (ROOT / "setup.py").read_text()
    assert "facebot=facebot.cli:main" in text
    assert re.search(r"python_requires\s*=\s*\">=3\.10\"", text)
