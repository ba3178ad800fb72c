"""Procedural rendering of one synthetic dive: a pool, a springboard and a stick-figure diver.

Frames are 455x256 RGB, like FineDiving's. The scene is laid out for the reference preprocessing
(squash to 112x200, centre crop rows 44..155 = rows 56..199 of the 256-row frame): the board, the
whole flight and the splash fall inside those rows, so the backbone sees every step.

Each step's execution quality (in [0, 1]) changes only the frames of that step, strongly:
- take-off: crouch depth, board bend, jump height, lean and arm symmetry;
- flight: tightness of the tuck/pike, legs apart, flailing arms, jerky rotation, bobbing arc;
- entry: body tilt, legs apart, splash width/height/amount of spray.
The flight starts where the take-off ends (its apex), as in a real dive.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from .dives import GROUPS, DiveKind

WIDTH, HEIGHT = 455, 256
BOARD_Y = 150  # top of the springboard
BOARD_TIP_X = 172  # free end of the board
WATER_Y = 192  # water surface
BOARD_DIP = 14  # board bend (px) at its tip for the best take-off

# Body segment lengths and widths (px).
TORSO, NECK, HEAD_R, THIGH, SHIN, ARM = 22, 2, 6.5, 14, 14, 23
W_TORSO, W_THIGH, W_SHIN, W_ARM = 13, 10, 8, 6
STAND_HIP = BOARD_Y - (THIGH + SHIN)

# Folding of each flight position at full tightness: (hip flexion, knee flexion, arm angle).
POSITIONS = {"tuck": (130.0, 140.0, 45.0), "pike": (150.0, 0.0, 100.0), "straight": (0.0, 0.0, 180.0)}

SPRAY = (246, 250, 255)
FOAM = (214, 236, 250)


@dataclass(frozen=True)
class DivePlan:
    """Everything that decides a dive's pixels; rendering it is deterministic."""

    kind: DiveKind
    qualities: tuple  # (take-off, flight, entry), each in [0, 1]
    step_frames: tuple  # frames of take-off, flight (somersaults [+ twists]), entry
    twist_share: float  # share of the flight frames spent twisting (0 without twists)
    x_offset: float  # where the diver stands, px (nuisance)
    tilt_sign: int  # side of a bad entry's tilt (nuisance)
    brightness: float  # scene lighting (nuisance)
    suit: tuple  # suit colour (nuisance)
    spray_seed: int  # positions of the splash droplets

    @property
    def num_frames(self) -> int:
        return int(sum(self.step_frames))


@dataclass
class Pose:
    hip: tuple
    theta: float  # torso direction, degrees clockwise from "head up"
    facing: int  # +1: front of the body towards the water (+x); -1: towards the board
    hip_flex: float = 0.0
    knee_flex: float = 0.0
    arms: tuple = (0.0, 0.0)  # per arm, degrees: 0 along the side, 180 overhead
    leg_split: float = 0.0
    width_scale: float = 1.0  # < 1 while twisting (the body turns edge-on)
    chest: bool = False  # chest stripe visible (twisting: facing the camera)


def _dir(deg: float) -> np.ndarray:
    r = math.radians(deg)
    return np.array([math.sin(r), -math.cos(r)])


def _skeleton(p: Pose) -> dict:
    hip = np.asarray(p.hip, dtype=float)
    shoulder = hip + TORSO * _dir(p.theta)
    pts = {"hip": hip, "shoulder": shoulder, "head": shoulder + (NECK + HEAD_R) * _dir(p.theta)}
    for side, sign in (("far", -1), ("near", +1)):
        thigh = p.theta + 180.0 - p.facing * (p.hip_flex + sign * p.leg_split / 2)
        knee = hip + THIGH * _dir(thigh)
        pts[f"knee_{side}"] = knee
        pts[f"foot_{side}"] = knee + SHIN * _dir(thigh + p.facing * p.knee_flex)
        arm = p.theta + 180.0 - p.facing * p.arms[0 if side == "far" else 1]
        pts[f"hand_{side}"] = shoulder + ARM * _dir(arm)
    return pts


def _lowest(pts: dict) -> float:
    return max(pts["foot_far"][1], pts["foot_near"][1])


def _segment(draw, a, b, width, colour):
    w = max(1.0, width)
    draw.line([tuple(a), tuple(b)], fill=colour, width=int(round(w)))
    r = w / 2
    for c in (a, b):
        draw.ellipse([c[0] - r, c[1] - r, c[0] + r, c[1] + r], fill=colour)


def _draw_diver(draw, p: Pose, suit, skin):
    pts = _skeleton(p)
    ws = p.width_scale
    dark = lambda c: tuple(int(v * 0.72) for v in c)  # noqa: E731  far limbs are in shadow
    _segment(draw, pts["shoulder"], pts["hand_far"], W_ARM * ws, dark(skin))
    _segment(draw, pts["hip"], pts["knee_far"], W_THIGH * ws, dark(suit))
    _segment(draw, pts["knee_far"], pts["foot_far"], W_SHIN * ws, dark(skin))
    _segment(draw, pts["hip"], pts["shoulder"], W_TORSO * ws, suit)
    if p.chest:
        mid = (pts["hip"] + pts["shoulder"]) / 2
        _segment(draw, mid, pts["shoulder"], 0.5 * W_TORSO * ws, (250, 220, 40))
    _segment(draw, pts["hip"], pts["knee_near"], W_THIGH * ws, suit)
    _segment(draw, pts["knee_near"], pts["foot_near"], W_SHIN * ws, skin)
    _segment(draw, pts["shoulder"], pts["hand_near"], W_ARM * ws, skin)
    h = pts["head"]
    draw.ellipse([h[0] - HEAD_R, h[1] - HEAD_R, h[0] + HEAD_R, h[1] + HEAD_R], fill=skin)
    return pts


def background(brightness: float) -> np.ndarray:
    """The static scene without the board: hall wall, scoreboard band, pool with lane ropes."""
    img = np.empty((HEIGHT, WIDTH, 3), dtype=np.float32)
    t = np.linspace(0.0, 1.0, WATER_Y)[:, None]
    img[:WATER_Y] = (np.array([22, 30, 58]) * (1 - t) + np.array([52, 62, 92]) * t)[:, None, :]
    img[40:52, 250:440] = (70, 78, 110)  # scoreboard band on the far wall
    for x in range(262, 430, 28):
        img[43:49, x : x + 14] = (150, 160, 60)
    depth = np.linspace(0.0, 1.0, HEIGHT - WATER_Y)[:, None]
    img[WATER_Y:] = (np.array([20, 120, 200]) * (1 - depth) + np.array([8, 64, 140]) * depth)[:, None, :]
    for y in range(WATER_Y + 6, HEIGHT, 14):  # lane ropes, seen in perspective
        img[y : y + 2] = (200, 200, 210)
    img *= brightness
    return np.clip(img, 0, 255).astype(np.uint8)


def _draw_board(draw, dip: float):
    # The board bends at its free end: a polyline whose tip drops by `dip`.
    xs = np.linspace(0, BOARD_TIP_X, 12)
    top = [(float(x), BOARD_Y + dip * (x / BOARD_TIP_X) ** 2) for x in xs]
    bottom = [(x, y + 7) for x, y in reversed(top)]
    draw.polygon(top + bottom, fill=(232, 228, 214))
    draw.line(top, fill=(250, 250, 245), width=2)
    draw.rectangle([28, BOARD_Y + 7, 52, WATER_Y], fill=(90, 90, 100))  # stand
    draw.rectangle([0, WATER_Y - 4, 80, WATER_Y], fill=(120, 120, 130))  # deck edge


def _smooth(x):
    x = min(max(x, 0.0), 1.0)
    return x * x * (3 - 2 * x)


class DiveRenderer:
    """Renders a DivePlan frame by frame; `frames()` yields HxWx3 uint8 arrays."""

    def __init__(self, plan: DivePlan):
        self.plan = plan
        self.kind = plan.kind
        _, self.facing, self.rot = GROUPS[plan.kind.group]
        self.bg = background(plan.brightness)
        self.skin = (240, 192, 150)
        self.x0 = BOARD_TIP_X - 7 + plan.x_offset - (4 if self.facing < 0 else 0)
        q1, q2, q3 = plan.qualities
        self.jump = 6.0 + 24.0 * q1  # take-off height (px)
        self.theta0 = self.rot * (3.0 + 30.0 * (1.0 - q1))  # lean when leaving the board
        self.apex = (self.x0 + 12.0, STAND_HIP - self.jump)
        self.theta_end = self.rot * 360.0 * plan.kind.somersaults
        self.tilt = plan.tilt_sign * 35.0 * (1.0 - q3)
        reach = TORSO + ARM
        # Where the flight ends (hands at the surface, vertical); the entry's tilt starts from it.
        self.entry_hip = (self.apex[0] + 34.0, WATER_Y - reach)
        spray = np.random.default_rng(plan.spray_seed)
        n = int(12 + 110 * (1.0 - q3))
        self.drops = np.stack(
            [spray.uniform(-1, 1, n), spray.uniform(0, 1, n) ** 0.7, spray.uniform(0, 1, n)], axis=1
        )

    # -- poses per step; u runs over [0, 1] within the step ------------------------------------
    def _takeoff(self, u: float):
        q1 = self.plan.qualities[0]
        f = self.facing
        depth = 0.4 + 0.6 * q1
        asym = 70.0 * (1.0 - q1)
        if u < 0.3:  # stand, swing the arms up
            s = _smooth(u / 0.3)
            pose = Pose((0, 0), 0.0, f, arms=(180 * s, 180 * s))
            dip = 0.0
        elif u < 0.55:  # crouch, arms swing back, the board bends
            s = _smooth((u - 0.3) / 0.25)
            arms = 180 - 220 * s
            pose = Pose(
                (0, 0), 8.0 * f * s, f, hip_flex=50 * depth * s, knee_flex=95 * depth * s, arms=(arms, arms)
            )
            dip = BOARD_DIP * q1 * s
        else:  # spring: legs extend, rise to the apex
            s = (u - 0.55) / 0.45
            e = _smooth(s / 0.3)
            arms = -40 + 220 * e
            lean = self.theta0 * _smooth(s) + 8.0 * f * (1 - e)
            pose = Pose(
                (0, 0),
                lean,
                f,
                hip_flex=50 * depth * (1 - e),
                knee_flex=95 * depth * (1 - e),
                arms=(arms, arms - asym * e),
            )
            dip = BOARD_DIP * q1 * (1 - _smooth(s / 0.25))
            if s > 0.25:  # airborne
                r = (s - 0.25) / 0.75
                rise = self.jump * (1 - (1 - r) ** 2)
                x = self.x0 + (self.apex[0] - self.x0) * r
                pose.hip = (x, STAND_HIP - rise)
                return pose, 0.0
        # Feet on the (bent) board: place the hip so that the feet touch it.
        pts = _skeleton(pose)
        tip_y = BOARD_Y + dip * (self.x0 / BOARD_TIP_X) ** 2
        pose.hip = (self.x0, tip_y - (_lowest(pts) - pts["hip"][1]))
        return pose, dip

    def _flight(self, u: float):
        q2 = self.plan.qualities[1]
        share = self.plan.twist_share
        tuck_end = 1.0 - share
        hip_flex, knee_flex, arm = POSITIONS[self.kind.position]
        ramp_out = (tuck_end - 0.12, tuck_end) if share else (0.82, 1.0)
        env = min(_smooth(u / 0.12), 1.0 - _smooth((u - ramp_out[0]) / (ramp_out[1] - ramp_out[0])))
        tight = 0.15 + 0.85 * q2
        jerk = (1.0 - q2) * 0.9
        prog = u + jerk * math.sin(6 * math.pi * u) / (6 * math.pi)
        theta = self.theta0 + (self.theta_end - self.theta0) * prog
        flail = (1.0 - q2) * 100.0 * env * math.sin(5 * math.pi * u)
        base_arm = arm * env + 180.0 * (1 - env)
        x = self.apex[0] + (self.entry_hip[0] - self.apex[0]) * u
        y = self.apex[1] + (self.entry_hip[1] - self.apex[1]) * u * u
        # An unsteady flight bobs up and down around its arc (zero at both ends of the step).
        y += (1.0 - q2) * 22.0 * env * math.sin(4 * math.pi * u)
        pose = Pose(
            (x, y),
            theta,
            self.facing,
            hip_flex=hip_flex * tight * env,
            knee_flex=knee_flex * tight * env,
            arms=(base_arm + flail, base_arm - flail),
            leg_split=90.0 * (1.0 - q2) * env,
        )
        if share and u > tuck_end - 0.05:
            tw = _smooth((u - (tuck_end - 0.05)) / (share + 0.05))
            tau = math.radians(360.0 * self.kind.twists * tw)
            pose.width_scale = 0.5 + 0.5 * abs(math.cos(tau))
            pose.chest = math.cos(tau) > 0
            pose.arms = (10.0 + flail, 10.0 - flail)
        return pose

    def _entry(self, u: float):
        q3 = self.plan.qualities[2]
        theta = self.theta_end + self.tilt
        sink = 90.0 * _smooth(u / 0.45)
        axis = _dir(theta)
        hip = np.asarray(self.entry_hip) + sink * axis
        pose = Pose(tuple(hip), theta, self.facing, arms=(180.0, 180.0), leg_split=35.0 * (1.0 - q3))
        return pose

    def _splash(self, draw, u: float, x: float):
        bad = 1.0 - self.plan.qualities[2]
        grow = _smooth(u / 0.3)
        radius = (7.0 + 60.0 * bad) * grow
        height = (5.0 + 70.0 * bad) * math.sin(math.pi * min(u / 0.75, 1.0))
        fade = 1.0 if u < 0.5 else 1.0 - 0.65 * (u - 0.5) / 0.5
        if radius <= 0:
            return
        foam_h = (3.0 + 6.0 * bad) * fade
        draw.ellipse([x - radius * 1.2, WATER_Y - foam_h / 2, x + radius * 1.2, WATER_Y + foam_h], fill=FOAM)
        for dx, dy, size in self.drops:
            if height < 1.0:
                break
            cx, cy = x + dx * radius, WATER_Y - dy * height
            r = (1.5 + 3.0 * size) * fade
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=SPRAY)

    # -- frames --------------------------------------------------------------------------------
    def frames(self):
        n1, *flight, n3 = self.plan.step_frames
        n2 = int(sum(flight))
        for i in range(self.plan.num_frames):
            img = Image.fromarray(self.bg.copy())
            draw = ImageDraw.Draw(img)
            dip = 0.0
            if i < n1:
                pose, dip = self._takeoff(i / max(n1 - 1, 1))
            elif i < n1 + n2:
                pose = self._flight((i - n1 + 0.5) / n2)
            else:
                u = (i - n1 - n2) / max(n3 - 1, 1)
                pose = self._entry(u)
            _draw_board(draw, dip)
            _draw_diver(draw, pose, self.plan.suit, self.skin)
            arr = np.asarray(img).copy()
            if i >= n1 + n2:
                # What is under the surface shows through the water, dimmed.
                below = arr[WATER_Y:].astype(np.uint16)
                arr[WATER_Y:] = ((below + 3 * self.bg[WATER_Y:].astype(np.uint16)) // 4).astype(np.uint8)
                img = Image.fromarray(arr)
                hands_x = self.entry_hip[0] + (TORSO + ARM) * _dir(pose.theta)[0]
                self._splash(ImageDraw.Draw(img), u, float(hands_x))
                arr = np.asarray(img)
            yield arr
