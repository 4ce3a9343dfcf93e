"""The reference head: URDF validity, joints, kinematics, inertia, ros2_control and controllers.

Everything here runs without ROS. The xacro source is expanded with the `xacro` package from
PyPI (the same ros/xacro code ROS ships); where it is missing, the tests that need it are
skipped with the reason, and a plain-XML comparison of joints and limits between the xacro and
the committed URDF still runs. `check_urdf` comes from Debian's liburdfdom-tools.
"""
from __future__ import annotations

import math
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
XACRO_FILE = ROOT / "urdf" / "facebot_head.urdf.xacro"
URDF_FILE = ROOT / "urdf" / "facebot_head.urdf"
CONTROLLERS_FILE = ROOT / "config" / "head_controllers.yaml"
XACRO_NS = "{http://www.ros.org/wiki/xacro}"

# name: (lower, upper, velocity) -- the actuator contract, in controller order
HEAD_JOINTS = {
    "neck_yaw": (-1.0, 1.0, 3.0),
    "neck_pitch": (-0.5, 0.5, 2.0),
    "neck_roll": (-0.35, 0.35, 1.5),
    "jaw": (0.0, 0.40, 8.0),
    "eye_yaw": (-0.6, 0.6, 12.0),
    "eye_pitch": (-0.4, 0.4, 10.0),
    "eyelid_left": (0.0, 1.2, 15.0),
    "eyelid_right": (0.0, 1.2, 15.0),
    "brow_left": (-0.3, 0.3, 4.0),
    "brow_right": (-0.3, 0.3, 4.0),
    "lip_corner_left": (-0.4, 0.4, 6.0),
    "lip_corner_right": (-0.4, 0.4, 6.0),
}
JOINT_ORDER = list(HEAD_JOINTS)

GZ_HARDWARE = "gz_ros2_control/GazeboSimSystem"
GZ_PLUGIN = ("gz_ros2_control-system", "gz_ros2_control::GazeboSimROS2ControlPlugin")
IGN_HARDWARE = "ign_ros2_control/IgnitionSystem"
IGN_PLUGIN = ("ign_ros2_control-system", "ign_ros2_control::IgnitionROS2ControlPlugin")
MOCK_HARDWARE = "mock_components/GenericSystem"


# ---------------------------------------------------------------------------------------------
# helpers: parsing, xacro, kinematics

def _floats(text: str) -> np.ndarray:
    return np.array([float(v) for v in text.split()], dtype=float)


def _origin(elem) -> tuple[np.ndarray, np.ndarray]:
    o = elem.find("origin") if elem is not None else None
    if o is None:
        return np.zeros(3), np.zeros(3)
    return _floats(o.get("xyz", "0 0 0")), _floats(o.get("rpy", "0 0 0"))


def rpy_matrix(rpy) -> np.ndarray:
    """URDF convention: fixed-axis roll about x, then pitch about y, then yaw about z."""
    r, p, y = rpy
    cr, sr, cp, sp, cy, sy = math.cos(r), math.sin(r), math.cos(p), math.sin(p), math.cos(y), math.sin(y)
    rx = np.array([[1, 0, 0], [0, cr, -sr], [0, sr, cr]])
    ry = np.array([[cp, 0, sp], [0, 1, 0], [-sp, 0, cp]])
    rz = np.array([[cy, -sy, 0], [sy, cy, 0], [0, 0, 1]])
    return rz @ ry @ rx


def axis_angle(axis, angle) -> np.ndarray:
    k = np.asarray(axis, dtype=float)
    k = k / np.linalg.norm(k)
    kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + math.sin(angle) * kx + (1 - math.cos(angle)) * kx @ kx


def transform(xyz, rot) -> np.ndarray:
    t = np.eye(4)
    t[:3, :3] = rot
    t[:3, 3] = xyz
    return t


class Robot:
    def __init__(self, root: ET.Element):
        self.root = root
        self.links = {link.get("name"): link for link in root.findall("link")}
        self.joints = {j.get("name"): j for j in root.findall("joint")}
        self.joint_by_child = {j.find("child").get("link"): j for j in self.joints.values()}

    @classmethod
    def from_file(cls, path: Path) -> "Robot":
        return cls(ET.parse(path).getroot())

    def actuated(self) -> list[str]:
        return [n for n, j in self.joints.items() if j.get("type") != "fixed"]

    def pose(self, link: str, q: dict | None = None) -> np.ndarray:
        """4x4 pose of `link` in the root link's frame for joint values q (default 0)."""
        q = q or {}
        chain = []
        while link in self.joint_by_child:
            joint = self.joint_by_child[link]
            chain.append(joint)
            link = joint.find("parent").get("link")
        t = np.eye(4)
        for joint in reversed(chain):
            xyz, rpy = _origin(joint)
            t = t @ transform(xyz, rpy_matrix(rpy))
            if joint.get("type") in ("revolute", "continuous"):
                axis = _floats(joint.find("axis").get("xyz"))
                t = t @ transform(np.zeros(3), axis_angle(axis, q.get(joint.get("name"), 0.0)))
        return t

    def point(self, link: str, local, q: dict | None = None, frame: str | None = None) -> np.ndarray:
        """A point given in `link`'s frame, expressed in `frame` (default: the root)."""
        p = self.pose(link, q) @ np.append(np.asarray(local, dtype=float), 1.0)
        if frame is not None:
            p = np.linalg.inv(self.pose(frame, q)) @ p
        return p[:3]

    def direction(self, link: str, local, q: dict | None = None, frame: str | None = None) -> np.ndarray:
        r = self.pose(link, q)[:3, :3]
        if frame is not None:
            r = self.pose(frame, q)[:3, :3].T @ r
        return r @ np.asarray(local, dtype=float)

    def collision(self, link: str):
        """(shape element, origin xyz, origin rpy) of a link's single collision geometry."""
        cols = self.links[link].findall("collision")
        assert len(cols) == 1, f"{link}: expected one collision element, found {len(cols)}"
        shape = list(cols[0].find("geometry"))[0]
        xyz, rpy = _origin(cols[0])
        return shape, xyz, rpy

    def geometry_centre(self, link: str) -> np.ndarray:
        return self.collision(link)[1]


def _have_xacro() -> bool:
    try:
        import xacro  # noqa: F401
    except ImportError:
        return False
    return True


needs_xacro = pytest.mark.skipif(
    not _have_xacro(),
    reason="python package 'xacro' is not installed (pip install xacro): cannot expand the "
    "xacro source here",
)


def expand(sim_mode: str, **args) -> ET.Element:
    """Expand the xacro source with the given arguments (xacro's Python API)."""
    import xacro

    mappings = {"sim_mode": sim_mode, **args}
    doc = xacro.process_file(str(XACRO_FILE), mappings=mappings)
    return ET.fromstring(doc.toxml())


def _canonical(elem: ET.Element):
    """Element tree as nested tuples, numbers compared as numbers, comments ignored."""
    def value(v: str):
        try:
            return tuple(round(float(x), 12) for x in v.split())
        except ValueError:
            return v.strip()

    attrs = tuple(sorted((k, value(v)) for k, v in elem.attrib.items()))
    text = value(elem.text) if elem.text and elem.text.strip() else ""
    return (elem.tag, attrs, text, tuple(_canonical(c) for c in elem if isinstance(c.tag, str)))


@pytest.fixture(scope="module")
def robot() -> Robot:
    return Robot.from_file(URDF_FILE)


# ---------------------------------------------------------------------------------------------
# validity

def _check_urdf(path: Path):
    exe = shutil.which("check_urdf")
    if exe is None:
        msg = "check_urdf not found (Debian package liburdfdom-tools); URDF parser check skipped"
        print(msg)
        pytest.skip(msg)
    res = subprocess.run([exe, str(path)], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "Successfully Parsed XML" in res.stdout
    return res.stdout


def test_check_urdf_accepts_committed_urdf():
    out = _check_urdf(URDF_FILE)
    assert "root Link: base_link" in out


@needs_xacro
@pytest.mark.parametrize("sim_mode", ["gazebo", "ignition"])
def test_check_urdf_accepts_simulation_expansions(sim_mode, tmp_path):
    root = expand(sim_mode, controllers_file=str(CONTROLLERS_FILE))
    path = tmp_path / f"head_{sim_mode}.urdf"
    path.write_text(ET.tostring(root, encoding="unicode"))
    out = _check_urdf(path)
    assert "root Link: world" in out


@needs_xacro
def test_committed_urdf_is_the_mock_expansion_of_the_xacro():
    fresh = expand("mock")
    committed = ET.parse(URDF_FILE).getroot()
    assert _canonical(fresh) == _canonical(committed), (
        "urdf/facebot_head.urdf is stale: regenerate it with "
        "`xacro urdf/facebot_head.urdf.xacro -o urdf/facebot_head.urdf`"
    )
    # and the default sim_mode is mock
    import xacro

    default = ET.fromstring(xacro.process_file(str(XACRO_FILE)).toxml())
    assert _canonical(default) == _canonical(committed)


@needs_xacro
def test_unknown_sim_mode_is_an_error():
    import xacro

    with pytest.raises(xacro.XacroException):
        expand("webots")


def test_xacro_source_declares_the_same_joints_and_limits(robot):
    """Plain-XML check (no xacro needed): the xacro's literal joints and limits match the URDF."""
    src = ET.parse(XACRO_FILE).getroot()
    declared = {}
    for j in src.findall("joint"):
        if j.get("type") == "fixed":
            continue
        lim = j.find("limit")
        declared[j.get("name")] = (
            j.get("type"),
            j.find("axis").get("xyz"),
            {k: float(v) for k, v in lim.attrib.items()},
        )
    assert list(declared) == JOINT_ORDER
    for name, (jtype, axis, limit) in declared.items():
        urdf_joint = robot.joints[name]
        assert urdf_joint.get("type") == jtype
        assert np.allclose(_floats(urdf_joint.find("axis").get("xyz")), _floats(axis))
        assert {k: float(v) for k, v in urdf_joint.find("limit").attrib.items()} == limit
    # the ros2_control macro calls in the xacro carry the same limits
    calls = src.find("ros2_control").findall(f"{XACRO_NS}head_joint_interfaces")
    assert [c.get("name") for c in calls] == JOINT_ORDER
    for c in calls:
        lower, upper, _ = HEAD_JOINTS[c.get("name")]
        assert (float(c.get("lower")), float(c.get("upper"))) == (lower, upper)


# ---------------------------------------------------------------------------------------------
# joints and tree

def test_actuated_joints_names_order_types_limits(robot):
    assert robot.actuated() == JOINT_ORDER
    for name, (lower, upper, velocity) in HEAD_JOINTS.items():
        j = robot.joints[name]
        assert j.get("type") == "revolute", name
        lim = j.find("limit")
        assert float(lim.get("lower")) == lower, name
        assert float(lim.get("upper")) == upper, name
        assert float(lim.get("velocity")) == velocity, name
        effort = float(lim.get("effort"))
        assert 0.05 <= effort <= 10.0, f"{name}: {effort} N m is not a small-servo torque"
        assert lower <= 0.0 <= upper, f"{name}: the neutral pose must be inside the limits"
        axis = _floats(j.find("axis").get("xyz"))
        assert np.isclose(np.linalg.norm(axis), 1.0)


def test_kinematic_tree(robot):
    parent = {c: j.find("parent").get("link") for c, j in robot.joint_by_child.items()}
    assert [l for l in robot.links if l not in parent] == ["base_link"]
    expected = {
        "neck_yaw_link": "base_link",
        "neck_pitch_link": "neck_yaw_link",
        "head_link": "neck_pitch_link",
        "jaw_link": "head_link",
        "eye_yaw_link": "head_link",
        "eye_pitch_link": "eye_yaw_link",
        "left_eye_link": "eye_pitch_link",
        "right_eye_link": "eye_pitch_link",
        "eyelid_left_link": "head_link",
        "eyelid_right_link": "head_link",
        "brow_left_link": "head_link",
        "brow_right_link": "head_link",
        "lip_corner_left_link": "head_link",
        "lip_corner_right_link": "head_link",
        "screen_link": "head_link",
        "screen_frame": "screen_link",
        "camera_link": "head_link",
        "camera_optical_frame": "camera_link",
    }
    assert parent == expected
    assert robot.joint_by_child["head_link"].get("name") == "neck_roll"
    for fixed_child in ("left_eye_link", "right_eye_link", "screen_link", "screen_frame", "camera_link",
                        "camera_optical_frame"):
        assert robot.joint_by_child[fixed_child].get("type") == "fixed"
    assert not robot.root.findall(".//mimic"), "the eyes are fixed children, not mimic joints"


def test_plausible_tabletop_head_dimensions(robot):
    shell, _, _ = robot.collision("head_link")
    size = _floats(shell.get("size"))
    assert np.all((size >= 0.12) & (size <= 0.25)), size
    top = robot.point("head_link", [0, 0, size[2]])[2]
    chin = robot.point("jaw_link", _chin_tip_local(robot))[2]
    head_height = top - chin
    assert 0.15 <= head_height <= 0.25, head_height
    assert 0.2 <= top <= 0.45, f"overall height {top} m"
    total_mass = sum(float(l.find("inertial/mass").get("value"))
                     for l in robot.links.values() if l.find("inertial") is not None)
    assert 1.0 <= total_mass <= 4.0, total_mass


def test_left_right_features_mirror_each_other(robot):
    pairs = [("left_eye_link", "right_eye_link"), ("eyelid_left_link", "eyelid_right_link"),
             ("brow_left_link", "brow_right_link"),
             ("lip_corner_left_link", "lip_corner_right_link")]
    mirror = np.array([1.0, -1.0, 1.0])
    for left, right in pairs:
        pl = robot.point(left, robot.geometry_centre(left), frame="head_link")
        pr = robot.point(right, robot.geometry_centre(right), frame="head_link")
        assert pl[1] > 0.01, left
        assert np.allclose(pl, pr * mirror, atol=1e-9), (left, right)
    # mirrored commands give mirrored motion
    q = {"eyelid_left": 0.7, "eyelid_right": 0.7, "brow_left": 0.2, "brow_right": 0.2,
         "lip_corner_left": 0.3, "lip_corner_right": 0.3}
    for left, right in pairs[1:]:
        pl = robot.point(left, robot.geometry_centre(left), q, frame="head_link")
        pr = robot.point(right, robot.geometry_centre(right), q, frame="head_link")
        assert np.allclose(pl, pr * mirror, atol=1e-9), (left, right)


# ---------------------------------------------------------------------------------------------
# forward kinematics: the documented sign conventions

def _face_centre(robot, q):
    return robot.point("screen_frame", [0, 0, 0], q)


def _face_normal(robot, q):
    return robot.direction("screen_frame", [1, 0, 0], q)


def test_neutral_face_looks_forward(robot):
    n = _face_normal(robot, {})
    assert np.allclose(n, [1, 0, 0])
    c = _face_centre(robot, {})
    assert c[0] > 0.05 and abs(c[1]) < 1e-12
    # the screen sits on the face plate: its glass is in front of the shell
    shell, shell_xyz, _ = robot.collision("head_link")
    front = shell_xyz[0] + _floats(shell.get("size"))[0] / 2
    assert robot.point("screen_frame", [0, 0, 0], frame="head_link")[0] >= front


@pytest.mark.parametrize("angle", [0.25, 0.5])
def test_neck_pitch_positive_moves_face_down(robot, angle):
    c0, c1 = _face_centre(robot, {}), _face_centre(robot, {"neck_pitch": angle})
    assert c1[2] < c0[2] - 0.01
    assert _face_normal(robot, {"neck_pitch": angle})[2] == pytest.approx(-math.sin(angle))
    assert _face_centre(robot, {"neck_pitch": -angle})[2] > c0[2] + 0.01


@pytest.mark.parametrize("angle", [0.3, 1.0])
def test_neck_yaw_positive_turns_face_left(robot, angle):
    c = _face_centre(robot, {"neck_yaw": angle})
    assert c[1] > 0.02
    n = _face_normal(robot, {"neck_yaw": angle})
    assert np.allclose(n, [math.cos(angle), math.sin(angle), 0.0])
    assert _face_centre(robot, {"neck_yaw": -angle})[1] < -0.02


def test_neck_roll_positive_tilts_head_to_the_right(robot):
    q = {"neck_roll": 0.3}
    rise = [robot.point("left_eye_link", [0, 0, 0], qq)[2] - robot.point("right_eye_link", [0, 0, 0], qq)[2]
            for qq in ({}, q)]
    assert abs(rise[0]) < 1e-12
    assert rise[1] > 0.01, "left side rises"
    crown = robot.point("head_link", [0, 0, 0.16], q)
    assert crown[1] < -0.02, "the top of the head leans to the robot's right"
    assert robot.point("head_link", [0, 0, 0.16], {"neck_roll": -0.3})[1] > 0.02


def _chin_tip_local(robot):
    """Lower front edge of the jaw plate, in jaw_link's frame."""
    shape, xyz, rpy = robot.collision("jaw_link")
    assert np.allclose(rpy, 0)
    sx, _, sz = _floats(shape.get("size"))
    return xyz + np.array([sx / 2, 0.0, -sz / 2])


@pytest.mark.parametrize("angle", [0.2, 0.40])
def test_jaw_positive_moves_chin_down_and_back(robot, angle):
    tip = _chin_tip_local(robot)
    p0 = robot.point("jaw_link", tip, {}, frame="head_link")
    p1 = robot.point("jaw_link", tip, {"jaw": angle}, frame="head_link")
    assert p1[2] < p0[2] - 0.025 * angle, "down"
    assert p1[0] < p0[0], "back"
    # closed: the chin is under the shell, at the face
    assert p0[2] < 0.0 and p0[0] > 0.06


def _gaze(robot, q, eye="left_eye_link", frame="head_link"):
    return robot.direction(eye, [1, 0, 0], q, frame=frame)


@pytest.mark.parametrize("yaw,pitch", [(0.0, 0.0), (0.4, 0.0), (-0.6, 0.0), (0.0, 0.3),
                                       (0.0, -0.4), (0.5, 0.35)])
def test_eye_gaze_direction(robot, yaw, pitch):
    q = {"eye_yaw": yaw, "eye_pitch": pitch}
    # documented: gaze = Rz(eye_yaw) Ry(eye_pitch) x, i.e. + yaw looks left, + pitch looks down
    expected = [math.cos(pitch) * math.cos(yaw), math.cos(pitch) * math.sin(yaw), -math.sin(pitch)]
    for eye in ("left_eye_link", "right_eye_link", "eye_pitch_link"):
        assert np.allclose(_gaze(robot, q, eye), expected, atol=1e-12), eye


def test_eye_yaw_left_and_pitch_down_signs(robot):
    assert _gaze(robot, {"eye_yaw": 0.3})[1] > 0.25
    assert _gaze(robot, {"eye_pitch": 0.3})[2] < -0.25
    # head and eyes compose: turning the neck left and the eyes left looks further left
    world = _gaze(robot, {"neck_yaw": 0.5, "eye_yaw": 0.5}, frame=None)
    assert np.allclose(world, [math.cos(1.0), math.sin(1.0), 0.0])


def test_eyes_stay_in_their_sockets(robot):
    """The rigid eye pair swings fore and aft with eye_yaw; over the whole gaze range each eyeball
    still shows in front of the face plate and stays seated in it (centre within one radius)."""
    shell, shell_xyz, _ = robot.collision("head_link")
    front = shell_xyz[0] + _floats(shell.get("size"))[0] / 2
    r = float(robot.collision("left_eye_link")[0].get("radius"))
    for yaw in (-0.6, -0.3, 0.0, 0.3, 0.6):
        for pitch in (-0.4, 0.0, 0.4):
            q = {"eye_yaw": yaw, "eye_pitch": pitch}
            for eye in ("left_eye_link", "right_eye_link"):
                c = robot.point(eye, [0, 0, 0], q, frame="head_link")
                assert c[0] + r >= front, (eye, yaw, "buried in the head")
                assert c[0] - front <= r, (eye, yaw, "off the face plate")
    # and the eyeballs never touch each other
    left = robot.point("left_eye_link", [0, 0, 0])
    right = robot.point("right_eye_link", [0, 0, 0])
    assert np.linalg.norm(left - right) > 2 * r


@pytest.mark.parametrize("side", ["left", "right"])
def test_eyelid_positive_closes_over_the_eye(robot, side):
    link, joint = f"eyelid_{side}_link", f"eyelid_{side}"
    eye_link = f"{side}_eye_link"
    eye_centre = robot.point(eye_link, [0, 0, 0], frame="head_link")
    r_eye = float(robot.collision(eye_link)[0].get("radius"))
    lid = robot.geometry_centre(link)
    open_ = robot.point(link, lid, {joint: 0.0}, frame="head_link") - eye_centre
    closed = robot.point(link, lid, {joint: 1.2}, frame="head_link") - eye_centre
    assert open_[2] > 0.8 * r_eye, "open lid sits above the eye"
    assert closed[0] > r_eye and abs(closed[2]) < 0.25 * r_eye, "closed lid covers the eye's front"
    half = robot.point(link, lid, {joint: 0.6}, frame="head_link") - eye_centre
    assert closed[2] < half[2] < open_[2], "closing is monotonic"
    # the lid rides on a shell around the eyeball and never cuts into it
    shape, _, _ = robot.collision(link)
    thickness = _floats(shape.get("size"))[0]
    for q in np.linspace(0.0, 1.2, 7):
        d = np.linalg.norm(robot.point(link, lid, {joint: q}, frame="head_link") - eye_centre)
        assert d - thickness / 2 > r_eye


@pytest.mark.parametrize("side", ["left", "right"])
def test_brow_positive_raises(robot, side):
    link, joint = f"brow_{side}_link", f"brow_{side}"
    c = robot.geometry_centre(link)
    z0 = robot.point(link, c, {}, frame="head_link")[2]
    assert robot.point(link, c, {joint: 0.3}, frame="head_link")[2] > z0 + 0.005
    assert robot.point(link, c, {joint: -0.3}, frame="head_link")[2] < z0 - 0.005


@pytest.mark.parametrize("side,outward", [("left", 1.0), ("right", -1.0)])
def test_lip_corner_positive_pulls_up_and_out(robot, side, outward):
    link, joint = f"lip_corner_{side}_link", f"lip_corner_{side}"
    c = robot.geometry_centre(link)
    p0 = robot.point(link, c, {}, frame="head_link")
    p1 = robot.point(link, c, {joint: 0.4}, frame="head_link")
    assert p1[2] > p0[2] + 0.005, "up"
    assert (p1[1] - p0[1]) * outward > 0.001, "out"
    pm = robot.point(link, c, {joint: -0.4}, frame="head_link")
    assert pm[2] < p0[2] - 0.005, "negative pulls down"
    # the corner sits at the mouth: below the eyes and the screen, above the jaw hinge
    assert 0.0 < p0[2] < robot.point("screen_frame", [0, 0, 0], frame="head_link")[2]


def test_camera_in_the_forehead_looks_forward_with_optical_axes(robot):
    c = robot.point("camera_optical_frame", [0, 0, 0], frame="head_link")
    eye = robot.point("left_eye_link", [0, 0, 0], frame="head_link")
    brow = robot.point("brow_left_link", [0, 0, 0], frame="head_link")
    assert abs(c[1]) < 1e-9 and eye[2] < c[2] < brow[2], "between the eyes and the brows, centred"
    r = robot.pose("camera_optical_frame")[:3, :3]  # REP 103 optical: z forward, x right, y down
    assert np.allclose(r[:, 2], [1, 0, 0]) and np.allclose(r[:, 0], [0, -1, 0]) and np.allclose(r[:, 1], [0, 0, -1])
    turned = robot.pose("camera_optical_frame", {"neck_yaw": 0.5})[:3, 2]  # it turns with the head
    assert np.allclose(turned, [np.cos(0.5), np.sin(0.5), 0], atol=1e-9)


def test_screen_frame_on_the_face(robot):
    shape, xyz, rpy = robot.collision("screen_link")
    sx, sy, sz = _floats(shape.get("size"))
    assert sx < 0.01 and 0.04 <= sy <= 0.15 and 0.02 <= sz <= 0.1, "a thin display panel"
    glass = robot.point("screen_frame", [0, 0, 0], frame="screen_link")
    assert np.allclose(glass, xyz + [sx / 2, 0, 0]), "screen_frame is on the glass, centred"
    assert np.allclose(robot.pose("screen_frame")[:3, :3], robot.pose("head_link")[:3, :3])
    # between the mouth and the eyes, clear of both
    c = robot.point("screen_frame", [0, 0, 0], frame="head_link")
    eye = robot.point("left_eye_link", [0, 0, 0], frame="head_link")
    r_eye = float(robot.collision("left_eye_link")[0].get("radius"))
    assert c[2] + sz / 2 < eye[2] - r_eye


# ---------------------------------------------------------------------------------------------
# inertia

def _inertia_matrix(inertial) -> np.ndarray:
    i = {k: float(v) for k, v in inertial.find("inertia").attrib.items()}
    return np.array([[i["ixx"], i["ixy"], i["ixz"]],
                     [i["ixy"], i["iyy"], i["iyz"]],
                     [i["ixz"], i["iyz"], i["izz"]]])


def _expected_inertia(shape, mass) -> np.ndarray:
    if shape.tag == "box":
        x, y, z = _floats(shape.get("size"))
        return mass / 12.0 * np.diag([y * y + z * z, x * x + z * z, x * x + y * y])
    if shape.tag == "cylinder":
        r, h = float(shape.get("radius")), float(shape.get("length"))
        side = mass * (3 * r * r + h * h) / 12.0
        return np.diag([side, side, mass * r * r / 2.0])
    if shape.tag == "sphere":
        r = float(shape.get("radius"))
        return np.eye(3) * 0.4 * mass * r * r
    raise AssertionError(f"unexpected geometry {shape.tag}")


def _check_inertias(root: ET.Element, frame_links: set[str]):
    robot = Robot(root)
    massless = set()
    for name, link in robot.links.items():
        inertial = link.find("inertial")
        if inertial is None:
            assert link.find("visual") is None and link.find("collision") is None, name
            massless.add(name)
            continue
        assert link.find("visual") is not None, f"{name}: no visual"
        mass = float(inertial.find("mass").get("value"))
        assert mass > 0, name
        inertia = _inertia_matrix(inertial)
        assert np.allclose(inertia, inertia.T)
        eig = np.linalg.eigvalsh(inertia)
        assert np.all(eig > 0), f"{name}: inertia not positive definite {eig}"
        a, b, c = eig
        tol = 1e-12 * eig.sum()
        assert a + b >= c - tol and a + c >= b - tol and b + c >= a - tol, f"{name}: triangle"
        # computed from the link's own geometry, about its centre
        shape, xyz, rpy = robot.collision(name)
        i_xyz, i_rpy = _origin(inertial)
        assert np.allclose(i_xyz, xyz) and np.allclose(i_rpy, rpy), f"{name}: inertial origin"
        assert np.allclose(inertia, _expected_inertia(shape, mass), rtol=1e-9, atol=0), name
        # the visual is the same shape as the collision
        vshape = list(link.find("visual/geometry"))[0]
        assert (vshape.tag, vshape.attrib) == (shape.tag, shape.attrib), name
        v_xyz, v_rpy = _origin(link.find("visual"))
        assert np.allclose(v_xyz, xyz) and np.allclose(v_rpy, rpy), name
        assert link.find("visual/material") is not None, f"{name}: no material"
    assert massless == frame_links


def test_inertias_valid_and_from_geometry(robot):
    _check_inertias(robot.root, {"screen_frame", "camera_link", "camera_optical_frame"})


@needs_xacro
def test_inertias_valid_in_gazebo_expansion():
    _check_inertias(expand("gazebo", controllers_file=str(CONTROLLERS_FILE)),
                    {"screen_frame", "world", "camera_link", "camera_optical_frame"})


def test_materials_defined(robot):
    defined = {m.get("name") for m in robot.root.findall("material")}
    used = {m.get("name") for m in robot.root.findall("link/visual/material")}
    assert used <= defined
    for m in robot.root.findall("material"):
        rgba = _floats(m.find("color").get("rgba"))
        assert rgba.shape == (4,) and np.all((rgba >= 0) & (rgba <= 1))


# ---------------------------------------------------------------------------------------------
# ros2_control

def _check_ros2_control(root: ET.Element, hardware: str):
    blocks = root.findall("ros2_control")
    assert len(blocks) == 1
    block = blocks[0]
    assert block.get("type") == "system"
    assert [p.text.strip() for p in block.findall("hardware/plugin")] == [hardware]
    joints = block.findall("joint")
    assert [j.get("name") for j in joints] == JOINT_ORDER
    urdf_joints = {j.get("name"): j for j in root.findall("joint")}
    for j in joints:
        name = j.get("name")
        cmds = j.findall("command_interface")
        assert [c.get("name") for c in cmds] == ["position"], name
        params = {p.get("name"): float(p.text) for p in cmds[0].findall("param")}
        lim = urdf_joints[name].find("limit")
        assert params == {"min": float(lim.get("lower")), "max": float(lim.get("upper"))}, name
        states = j.findall("state_interface")
        assert [s.get("name") for s in states] == ["position", "velocity"], name
        init = {p.get("name"): float(p.text) for p in states[0].findall("param")}
        assert init == {"initial_value": 0.0}, name
    assert not block.findall("sensor") and not block.findall("gpio")


def test_ros2_control_block_mock(robot):
    _check_ros2_control(robot.root, MOCK_HARDWARE)
    assert not robot.root.findall("gazebo")
    assert "world" not in robot.links


@needs_xacro
@pytest.mark.parametrize("sim_mode,hardware,plugin", [("gazebo", GZ_HARDWARE, GZ_PLUGIN),
                                                      ("ignition", IGN_HARDWARE, IGN_PLUGIN)])
def test_ros2_control_block_and_plugin_in_simulation(sim_mode, hardware, plugin):
    root = expand(sim_mode, controllers_file=str(CONTROLLERS_FILE))
    _check_ros2_control(root, hardware)
    plugins = root.findall("gazebo/plugin")
    assert [(p.get("filename"), p.get("name")) for p in plugins] == [plugin]
    assert [e.text for e in plugins[0].findall("parameters")] == [str(CONTROLLERS_FILE)]
    # base pinned to the world
    world_joint = [j for j in root.findall("joint") if j.find("parent").get("link") == "world"]
    assert len(world_joint) == 1
    assert world_joint[0].get("type") == "fixed"
    assert world_joint[0].find("child").get("link") == "base_link"
    # the same robot otherwise
    assert Robot(root).actuated() == JOINT_ORDER


def test_plugin_strings_in_xacro_source():
    """Without xacro: the source names the verified plugin strings, and the default
    controllers file is the installed config/head_controllers.yaml."""
    text = XACRO_FILE.read_text()
    for s in (MOCK_HARDWARE, GZ_HARDWARE, IGN_HARDWARE, *GZ_PLUGIN, *IGN_PLUGIN):
        assert s in text, s
    assert "$(find facebot)/config/head_controllers.yaml" in text


# ---------------------------------------------------------------------------------------------
# controllers

@pytest.fixture(scope="module")
def controllers() -> dict:
    return yaml.safe_load(CONTROLLERS_FILE.read_text())


def test_controller_manager(controllers):
    cm = controllers["controller_manager"]["ros__parameters"]
    assert cm["update_rate"] == 100
    types = {k: v["type"] for k, v in cm.items() if isinstance(v, dict)}
    assert types == {
        "joint_state_broadcaster": "joint_state_broadcaster/JointStateBroadcaster",
        "head_position_controller": "forward_command_controller/ForwardCommandController",
        "head_trajectory_controller": "joint_trajectory_controller/JointTrajectoryController",
    }
    # every configured controller is known to the controller manager
    assert set(controllers) - {"controller_manager"} <= set(types)


def test_forward_command_controller(controllers, robot):
    p = controllers["head_position_controller"]["ros__parameters"]
    assert p["joints"] == JOINT_ORDER == robot.actuated()
    assert p["interface_name"] == "position"
    assert set(p) == {"joints", "interface_name"}


def test_joint_trajectory_controller(controllers, robot):
    p = controllers["head_trajectory_controller"]["ros__parameters"]
    assert p["joints"] == JOINT_ORDER == robot.actuated()
    assert p["command_interfaces"] == ["position"]
    assert p["state_interfaces"] == ["position", "velocity"]
    assert isinstance(p["allow_partial_joints_goal"], bool)
    # names declared by joint_trajectory_controller on both Humble and Jazzy
    assert set(p) <= {"joints", "command_interfaces", "state_interfaces",
                      "allow_partial_joints_goal", "action_monitor_rate",
                      "interpolation_method", "constraints"}
    assert p["interpolation_method"] in ("splines", "none")
    c = p["constraints"]
    assert c["stopped_velocity_tolerance"] > 0 and c["goal_time"] >= 0
    per_joint = {k: v for k, v in c.items() if isinstance(v, dict)}
    assert list(per_joint) == JOINT_ORDER
    for name, tol in per_joint.items():
        assert set(tol) == {"trajectory", "goal"}, name
        lower, upper, _ = HEAD_JOINTS[name]
        assert 0 < tol["goal"] <= tol["trajectory"] < upper - lower, name
    # the ROS parameter types must be doubles where the controller declares doubles
    assert isinstance(p["action_monitor_rate"], float)
    for v in (c["stopped_velocity_tolerance"], c["goal_time"]):
        assert isinstance(v, float)
    for tol in per_joint.values():
        assert all(isinstance(v, float) for v in tol.values())
