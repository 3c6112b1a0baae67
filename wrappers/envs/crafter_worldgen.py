"""Crafter's world generation, with the noise computed as whole arrays: the same worlds, about 10x faster.

``crafter.worldgen.generate_world`` calls opensimplex once per cell and noise octave (about 27,000 Python-level
calls per 64 x 64 world: 0.15 s, most of a random agent's env time in Crafter, whose episodes end every ~200 steps).
:func:`generate_world` evaluates each noise field of crafter's recipe over the whole grid with opensimplex's
``noise3array`` (the same float arithmetic as its scalar ``noise3``), decides the cells that need no random draw
with array comparisons, and keeps a Python loop only for the cells that draw from the world's random generator, in
crafter's order (x-major), so the world, its creatures and the generator's state afterwards are identical to
crafter's (tested over many seeds). :func:`install` makes crafter's ``Env.reset`` use it; importing
``wrappers.envs.crafter_adapter`` installs it.
"""

from __future__ import annotations

import functools

import numpy as np

__all__ = ["generate_world", "install"]


@functools.cache
def _point_kernel():
    """A compiled loop of opensimplex's own 3-D noise over a list of points (serial: no thread start-up per call)."""
    import numba
    from opensimplex.internals import _noise3

    @numba.njit(cache=True)
    def points(xs, ys, z, perm, perm_grad_index3):  # pragma: no cover (compiled)
        out = np.empty(xs.size)
        for i in range(xs.size):
            out[i] = _noise3(xs[i], ys[i], z, perm, perm_grad_index3)
        return out

    return points


def generate_world(world, player) -> None:
    """Fill ``world`` (a fresh ``crafter.engine.World``) with materials and creatures exactly as crafter's
    ``worldgen.generate_world`` does, drawing the same random numbers in the same order."""
    import opensimplex
    from crafter import constants, objects

    simplex = opensimplex.OpenSimplex(seed=world.random.randint(0, 2**31 - 1))
    kernel = _point_kernel()
    uniform = world.random.uniform
    W, H = world.area
    X, Y = np.meshgrid(np.arange(W), np.arange(H), indexing="ij")  # (W, H) cell coordinates

    def noise(where: np.ndarray, xs: np.ndarray, ys: np.ndarray, z: float, sizes: dict, normalize: bool = True):
        """crafter's ``_simplex`` (a weighted sum over sizes in dict order, optionally normalized) at the cells
        ``where``; 0 elsewhere. The noise has no side effects, so skipping the cells crafter's branches never
        evaluate changes nothing."""
        out = np.zeros((W, H))
        value = 0
        for size, weight in sizes.items():
            value = value + weight * kernel((xs[where] / size).astype(np.float64), (ys[where] / size).astype(np.float64),
                                            float(z), simplex._perm, simplex._perm_grad_index3)
        out[where] = value / sum(sizes.values()) if normalize else value
        return out

    everywhere = np.ones((W, H), bool)
    dist2 = (X - player.pos[0]) ** 2 + (Y - player.pos[1]) ** 2
    start = 4 - np.sqrt(dist2)
    start = start + 2 * noise(everywhere, X, Y, 8, {3: 1})
    start = 1 / (1 + np.exp(-start))
    grass_start = start > 0.5
    water = noise(~grass_start, X, Y, 3, {15: 1, 5: 0.15}, False) + 0.1
    water = water - 2 * start
    mountain = noise(~grass_start, X, Y, 0, {15: 1, 5: 0.3})
    mountain = mountain - (4 * start + 0.3 * water)

    in_mountain = ~grass_start & (mountain > 0.15)
    cave = in_mountain & (mountain > 0.3)
    cave &= noise(cave, X, Y, 6, {7: 1}) > 0.15
    h_tunnel = in_mountain & ~cave
    h_tunnel &= noise(h_tunnel, 2 * X, Y / 5, 7, {3: 1}) > 0.4
    v_tunnel = in_mountain & ~cave & ~h_tunnel
    v_tunnel &= noise(v_tunnel, X / 5, 2 * Y, 7, {3: 1}) > 0.4
    rock = in_mountain & ~cave & ~h_tunnel & ~v_tunnel  # coal / iron / diamond / lava / stone: may draw
    lowland = ~grass_start & ~in_mountain
    sand = lowland & (0.25 < water) & (water <= 0.35)
    sand &= noise(sand, X, Y, 4, {9: 1}) > -0.2
    lake = lowland & ~sand & (0.3 < water)
    grassland = lowland & ~sand & ~lake  # tree / grass: may draw

    names = np.full((W, H), "grass", dtype=object)
    names[cave | h_tunnel | v_tunnel] = "path"
    names[sand], names[lake] = "sand", "water"
    coal = noise(rock, X, Y, 1, {8: 1}) > 0
    iron = noise(rock, X, Y, 2, {6: 1}) > 0.4
    lava = noise(rock & (mountain > 0.3), X, Y, 6, {5: 1}) > 0.35
    tree = noise(grassland, X, Y, 5, {7: 1}) > 0
    for i, j in zip(*np.nonzero(rock | (grassland & tree))):  # crafter's cell order (x outer, y inner), lazy draws
        if grassland[i, j]:
            names[i, j] = "tree" if uniform() > 0.8 else "grass"
        elif coal[i, j] and uniform() > 0.85:
            names[i, j] = "coal"
        elif iron[i, j] and uniform() > 0.75:
            names[i, j] = "iron"
        elif mountain[i, j] > 0.18 and uniform() > 0.994:
            names[i, j] = "diamond"
        elif mountain[i, j] > 0.3 and lava[i, j]:
            names[i, j] = "lava"
        else:
            names[i, j] = "stone"
    for name in np.unique(names):
        if name not in world._mat_ids:
            world[0, 0] = name  # registers the id as crafter's World.__setitem__ does; overwritten below
    world._mat_map[:] = np.vectorize(world._mat_ids.__getitem__, otypes=[np.uint8])(names)

    tunnels = h_tunnel | v_tunnel
    dist = np.sqrt(dist2)
    walkable = np.isin(names, list(constants.walkable))
    for i, j in zip(*np.nonzero(walkable)):  # crafter's _set_object, cell by cell in its order
        material = names[i, j]
        if dist[i, j] > 3 and material == "grass" and uniform() > 0.985:
            world.add(objects.Cow(world, (int(i), int(j))))
        elif dist[i, j] > 10 and uniform() > 0.993:
            world.add(objects.Zombie(world, (int(i), int(j)), player))
        elif material == "path" and tunnels[i, j] and uniform() > 0.95:
            world.add(objects.Skeleton(world, (int(i), int(j)), player))


def install() -> None:
    """Make crafter's ``Env.reset`` generate worlds with :func:`generate_world` (idempotent)."""
    from crafter import worldgen  # crafter's Env.reset calls worldgen.generate_world through the module

    if getattr(worldgen, "_amago_original_generate_world", None) is None:
        worldgen._amago_original_generate_world = worldgen.generate_world
    worldgen.generate_world = generate_world
