// Drawing shared by the canvases: the onset marker, a vertical line through the plot with a small
// triangle at its top.

/** Draw an onset marker at x = px (device pixels) over a plot plotH pixels tall; `strong` draws it wider. */
export function drawOnsetMarker(ctx, px, plotH, dpr, strong) {
  ctx.fillRect(px - (strong ? dpr : dpr / 2), 0, strong ? 2 * dpr : dpr, plotH);
  ctx.beginPath();
  ctx.moveTo(px - 5 * dpr, 0);
  ctx.lineTo(px + 5 * dpr, 0);
  ctx.lineTo(px, 7 * dpr);
  ctx.fill();
}
