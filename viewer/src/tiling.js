// The CLI's tile plan (hyperthumbnail/runtime/tiling.py `plan_tiles`), line for line, so the browser
// cuts a large photo exactly where the CLI does. The margins and tile sizes come from the
// manifest, which the build writes from tiling.py's constants; tests/test_viewer.py checks that
// both plans agree.

function roundHalfEven(x) { // Python's round()
  const floor = Math.floor(x), diff = x - floor;
  if (diff > 0.5) return floor + 1;
  if (diff < 0.5) return floor;
  return floor % 2 === 0 ? floor : floor + 1;
}

function axisPlan(length, margin, parts) {
  if (parts === 1) return { size: length, cores: [[0, length]], extents: [[0, length]] };
  const smallest = Math.ceil((length + 2 * margin * (parts - 1)) / parts);
  for (let size = smallest; size < Math.min(length, smallest + 3); size++) {
    const starts = Array.from({ length: parts }, (_, i) => roundHalfEven((i * (length - size)) / (parts - 1)));
    const overlaps = starts.slice(0, -1).map((start, i) => start + size - starts[i + 1]);
    if (Math.min(...overlaps) >= 2 * margin) {
      const bounds = [0, ...overlaps.map((overlap, i) => starts[i + 1] + Math.floor(overlap / 2)), length];
      const cores = bounds.slice(0, -1).map((start, i) => [start, bounds[i + 1]]);
      if (cores.some(([start, stop]) => stop <= start)) return null;
      return { size, cores, extents: starts.map((start) => [start, start + size]) };
    }
  }
  return null;
}

function axisPlans(length, margin) {
  const plans = [];
  for (let parts = 1; parts <= length; parts++) {
    if (parts > 1 && (length + 2 * margin * (parts - 1)) / parts <= 2 * margin + 1) break;
    const plan = axisPlan(length, margin, parts);
    if (plan) plans.push({ ...plan, sum: plan.size * parts });
  }
  return plans;
}

/**
 * Cover a rows x cols block grid with tiles of one extent size (at most `maxArea` blocks; null:
 * one tile): [{core: [[r0, r1], [c0, c1]], extent: [[r0, r1], [c0, c1]]}] in blocks.
 */
export function planTiles(rows, cols, margin, maxArea) {
  if (rows < 1 || cols < 1) throw new Error(`empty block grid ${rows}x${cols}`);
  if (maxArea === null || rows * cols <= maxArea) return [{ core: [[0, rows], [0, cols]], extent: [[0, rows], [0, cols]] }];
  let best = null;
  const rowPlans = axisPlans(rows, margin), colPlans = axisPlans(cols, margin);
  for (const r of rowPlans) {
    for (const c of colPlans) {
      if (r.size * c.size <= maxArea && (best === null || r.sum * c.sum < best.area)) best = { area: r.sum * c.sum, r, c };
    }
  }
  if (best === null) throw new Error(`a tile of ${maxArea} blocks cannot hold a core and a ${margin}-block margin on a ${rows}x${cols}-block image`);
  const tiles = [];
  best.r.cores.forEach((rowCore, i) => {
    best.c.cores.forEach((colCore, j) => tiles.push({ core: [rowCore, colCore], extent: [best.r.extents[i], best.c.extents[j]] }));
  });
  return tiles;
}
