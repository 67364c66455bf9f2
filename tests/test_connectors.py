"""Connector registry, spec validation and the generated scene."""

import dataclasses

import mujoco
import numpy as np
import pytest

from insertion_jax.envs import assembly_scene, connectors, mjcf, scene


def test_registry_lists_tasks_in_difficulty_order():
    assert connectors.task_names() == ('usb', 'dsub', 'model_e')
    for name in connectors.task_names():
        assert connectors.get_task(name).name == name


def test_unknown_task_error_lists_valid_names():
    with pytest.raises(ValueError, match=r"'hdmi'.*usb, dsub, model_e"):
        connectors.get_task('hdmi')


@pytest.mark.parametrize(
    'field, value, message',
    [
        ('clearance_mm', 0.0, 'clearance_mm=0.0 must be > 0'),
        ('friction_range', (0.5, 0.2), 'friction_range'),
        ('plug_length_mm', 5.0, 'must exceed insertion_depth_mm'),
    ],
)
def test_bad_spec_values_are_named(field, value, message):
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(connectors.USB, **{field: value})


@pytest.mark.parametrize('name', connectors.task_names())
def test_scene_compiles_with_material_and_explicit_pairs(name):
    spec = connectors.get_task(name)
    model = scene.build_model(spec)
    assert model.nmat >= 1  # mjx.ray needs a material (DESIGN.md pitfalls)
    assert model.nv == 6 and model.nu == 6
    # Only explicit pairs collide: automatic geom-geom contacts are all off.
    assert np.all(model.geom_contype == 0) and np.all(model.geom_conaffinity == 0)
    assert model.npair > 0


def test_socket_opening_matches_clearance():
    """The aligned plug fits with exactly the specified clearance per axis."""
    spec = connectors.USB
    model = scene.build_model(spec)
    data = mujoco.MjData(model)
    mujoco.mj_forward(model, data)
    wall = lambda n: mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_GEOM, n)  # noqa: E731
    px, nx = data.geom_xpos[wall('px_wall')], data.geom_xpos[wall('nx_wall')]
    half_thick = model.geom_size[wall('px_wall')][1]
    opening_mm = (px[0] - nx[0] - 2 * half_thick) * 1e3
    assert opening_mm == pytest.approx(spec.plug_width_mm + spec.clearance_mm, abs=1e-6)


@pytest.mark.parametrize('name', connectors.task_names())
def test_socket_and_plug_are_mirror_symmetric_in_x(name):
    """Each -x geom is the mirror image of its +x twin (a trapezoid's slanted sides too)."""
    model = scene.build_model(connectors.get_task(name))
    data = mujoco.MjData(model)
    mujoco.mj_forward(model, data)
    mirror = np.diag([-1.0, 1.0, 1.0])
    names = [model.geom(i).name for i in range(model.ngeom)]
    twins = [(n, n.replace('px', 'nx')) for n in names if 'px' in n and 'pin' not in n]
    assert twins
    for px, nx in twins:
        a, b = model.geom(px).id, model.geom(nx).id
        np.testing.assert_allclose(data.geom_xpos[b], mirror @ data.geom_xpos[a], atol=1e-9)
        rot_a, rot_b = data.geom_xmat[a].reshape(3, 3), data.geom_xmat[b].reshape(3, 3)
        # Same box up to the sign of each axis: |R_b^T M R_a| is the identity.
        np.testing.assert_allclose(np.abs(rot_b.T @ mirror @ rot_a), np.eye(3), atol=1e-6)
        np.testing.assert_allclose(model.geom_size[b], model.geom_size[a])


def test_keyed_and_pinned_connectors_have_their_features():
    dsub_pairs = scene.contact_pairs(connectors.DSUB)
    assert {p[0] for p in dsub_pairs} >= {'pin0', 'pin1', 'plug_ear_px', 'plug_ear_nx'}
    model_e_pairs = scene.contact_pairs(connectors.MODEL_E)
    assert any(a == 'plug_key0' and b.startswith('key0_back') for a, b, _ in model_e_pairs)
    assert any(cls == 'seal' for _, _, cls in model_e_pairs)


NORMAL_IN = np.array([0.6, 0.8])
FACE_POINT = np.array([0.01, -0.02])
CHAMFER = 0.4e-3


def slanted_wall(**kwargs):
    """A wall turned off the axes, with a 0.4 mm chamfer: (wall, chamfer)."""
    return mjcf.wall_with_chamfer(
        'w',
        FACE_POINT,
        np.array([-0.8, 0.6]),
        NORMAL_IN,
        half_length=5e-3,
        depth=10e-3,
        chamfer=CHAMFER,
        thickness=4e-3,
        **kwargs,
    )


def test_chamfer_bevel_runs_from_the_wall_edge_to_the_top():
    """The chamfer box's bevel face holds the wall's inner top edge (z = -chamfer
    at the wall face) and the point `chamfer` outward of it at the top (z = 0)."""
    wall, bevel_box = slanted_wall()
    normal_in, face_point, chamfer = NORMAL_IN, FACE_POINT, CHAMFER
    assert wall.name == 'w_wall' and bevel_box.name == 'w_chamfer'
    rot, centre, size = bevel_box.rot, bevel_box.pos, bevel_box.size
    material = rot[:, 2]  # the box's z axis points into the socket material
    edge = np.array([*face_point, -chamfer])
    top = np.array([*(face_point - normal_in * chamfer), 0.0])
    for point in (edge, top):
        assert (point - centre) @ material == pytest.approx(-size[2], abs=1e-12)
    # The wall's inner face passes through the face point, below the chamfer.
    inner = wall.pos + wall.rot[:, 1] * wall.size[1]
    assert (inner[:2] - face_point) @ normal_in == pytest.approx(0.0, abs=1e-12)
    assert wall.pos[2] + wall.size[2] == pytest.approx(-chamfer)


def test_prism_chamfer_is_the_bevel_a_back_face_and_a_bottom():
    """The prism chamfer's section: the bevel from the wall's inner top edge to
    the top (z = 0) `chamfer` outward, a vertical back face down to the wall's
    top (z = -chamfer) and a bottom on it; MuJoCo places the mesh there."""
    wall, prism = slanted_wall(chamfer_prism=True)
    normal_in, face_point, chamfer = NORMAL_IN, FACE_POINT, CHAMFER
    assert prism.kind == 'mesh' and len(prism.vertices) == 6
    world = prism.pos + prism.vertices @ prism.rot.T
    outward = -(world[:, :2] - face_point) @ normal_in
    section = {(round(o * 1e6), round(z * 1e6)) for o, z in zip(outward, world[:, 2], strict=True)}
    c = round(chamfer * 1e6)
    assert section == {(0, -c), (c, 0), (c, -c)}
    # The compiled model puts the mesh at the same place (MuJoCo recentres it).
    xml = (
        f'<mujoco><asset>{prism.asset_xml()}</asset><worldbody>{wall.xml()}{prism.xml()}'
        '</worldbody></mujoco>'
    )
    model = mujoco.MjModel.from_xml_string(xml)
    data = mujoco.MjData(model)
    mujoco.mj_forward(model, data)
    g = model.geom('w_chamfer').id
    mesh = model.geom_dataid[g]
    verts = model.mesh_vert[
        model.mesh_vertadr[mesh] : model.mesh_vertadr[mesh] + model.mesh_vertnum[mesh]
    ]
    placed = data.geom_xpos[g] + verts @ data.geom_xmat[g].reshape(3, 3).T
    np.testing.assert_allclose(np.sort(placed, axis=0), np.sort(world, axis=0), atol=1e-9)


def test_rotation_refuses_axes_that_are_not_orthogonal():
    with pytest.raises(ValueError, match='not orthogonal'):
        mjcf.rotation(np.array([1.0, 0.0]), np.array([1.0, 1.0]), mjcf.UP)


@pytest.mark.parametrize('task', assembly_scene.TASKS)
def test_assembly_scene_compiles_with_explicit_pairs(task):
    model = assembly_scene.build_model(task)
    assert np.all(model.geom_contype == 0) and np.all(model.geom_conaffinity == 0)
    assert model.npair == len(assembly_scene.contact_pairs(task))
