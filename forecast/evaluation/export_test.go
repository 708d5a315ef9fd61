package evaluation

// FixedSpread is fixedSpread, for the per-day view of the calibration.
var FixedSpread = fixedSpread
