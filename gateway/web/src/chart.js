// The asset chart: candles with volume, the running candle, the predicted
// next close with its band drawn ahead of the last candle, past predictions
// against the actual closes, and alert markers. It keeps its own bars by
// time so that an event arriving out of order (a closed candle after the
// next candle's first tick) redraws instead of throwing.
import { createChart, CandlestickSeries, HistogramSeries, LineSeries, LineStyle, createSeriesMarkers, CrosshairMode } from "lightweight-charts";

const UP = "#26a69a", DOWN = "#ef5350";

export class CandleChart {
  constructor(el) {
    this.chart = createChart(el, {
      autoSize: true,
      layout: { background: { color: "#11151c" }, textColor: "#c9d1d9", attributionLogo: false },
      grid: { vertLines: { color: "#1d232c" }, horzLines: { color: "#1d232c" } },
      crosshair: { mode: CrosshairMode.Normal },
      timeScale: { timeVisible: true, secondsVisible: false, rightOffset: 4 },
    });
    this.candles = this.chart.addSeries(CandlestickSeries, { upColor: UP, downColor: DOWN, wickUpColor: UP, wickDownColor: DOWN, borderVisible: false });
    this.volume = this.chart.addSeries(HistogramSeries, { priceScaleId: "vol", priceFormat: { type: "volume" }, lastValueVisible: false, priceLineVisible: false });
    this.chart.priceScale("vol").applyOptions({ scaleMargins: { top: 0.8, bottom: 0 } });
    const line = (color, style, width = 2) => this.chart.addSeries(LineSeries, { color, lineStyle: style, lineWidth: width, lastValueVisible: false, priceLineVisible: false, crosshairMarkerVisible: false });
    this.past = line("#d29922", LineStyle.Solid, 1);
    this.line = line;
    this.forecast = line("#58a6ff", LineStyle.Dashed);
    this.bandLines = []; // [{upper, lower}] by level, widest first, made when first needed
    this.fan = null;
    this.fanSpan = -1;
    this.markers = createSeriesMarkers(this.candles, []);
    this.bars = new Map(); // time -> bar
    this.times = []; // sorted
    this.closed = new Set();
    this.drawn = []; // [{time, publishedAt, drawnAt}] for the benchmark
  }

  destroy() {
    this.chart.remove();
  }

  setHistory(candles) {
    this.bars.clear();
    this.closed.clear();
    for (const c of candles) {
      this.bars.set(c.time, c);
      this.closed.add(c.time);
    }
    this.times = [...this.bars.keys()].sort((a, b) => a - b);
    this.redraw();
    // The whole range in view, whatever the width: a fixed bar spacing
    // left most of a wide chart empty.
    this.chart.timeScale().fitContent();
    this.fanSpan = -1; // refit when the first fan comes
  }

  redraw() {
    const bars = this.times.map((t) => this.bars.get(t));
    this.candles.setData(bars);
    this.volume.setData(bars.map(volBar));
  }

  // upsert adds or replaces the bar at its time; closed marks a candle
  // from the candles channel or history, not a running one.
  upsert(bar, closed) {
    if (!closed && this.closed.has(bar.time)) return; // a late tick of a closed candle
    const last = this.times[this.times.length - 1];
    const known = this.bars.has(bar.time);
    this.bars.set(bar.time, bar);
    if (closed) this.closed.add(bar.time);
    if (last === undefined || bar.time > last) {
      this.times.push(bar.time);
      this.candles.update(bar);
      this.volume.update(volBar(bar));
    } else if (bar.time === last) {
      this.candles.update(bar);
      this.volume.update(volBar(bar));
    } else {
      if (!known) {
        this.times.push(bar.time);
        this.times.sort((a, b) => a - b);
      }
      this.redraw();
    }
  }

  lastClosed() {
    for (let i = this.times.length - 1; i >= 0; i--) if (this.closed.has(this.times[i])) return this.bars.get(this.times[i]);
    return null;
  }

  // setForecast draws a fan (see forecast.js) ahead of the last candle:
  // the point forecasts dashed, each interval level's bounds dotted, the
  // wider the fainter.
  setForecast(fan) {
    this.fan = fan;
    // Refit when the fan reaches a new distance (its first draw, another
    // horizon chosen), not on every prediction: that would undo the
    // user's zoom each candle.
    const span = fan ? fan.center[fan.center.length - 1].time - fan.center[0].time : 0;
    const refit = this.times.length > 0 && span !== this.fanSpan;
    this.fanSpan = span;
    this.forecast.setData(fan ? fan.center : []);
    const bands = fan ? fan.bands : [];
    while (this.bandLines.length < bands.length) {
      const alpha = ["70", "b0", "d0", "f0"][Math.min(3, this.bandLines.length)];
      this.bandLines.push({ upper: this.line("#58a6ff" + alpha, LineStyle.Dotted, 1), lower: this.line("#58a6ff" + alpha, LineStyle.Dotted, 1) });
    }
    this.bandLines.forEach((l, i) => {
      l.upper.setData(bands[i] ? bands[i].upper : []);
      l.lower.setData(bands[i] ? bands[i].lower : []);
    });
    if (refit) this.chart.timeScale().fitContent();
  }

  setPast(preds) {
    this.past.setData(preds.map((p) => ({ time: p.target, value: p.predicted_close })));
  }

  setMarkers(alerts) {
    this.markers.setMarkers(alerts.map((a) => ({ time: a.time, position: "aboveBar", color: "#f0883e", shape: "arrowDown", text: a.kind })));
  }

  snapshot() {
    return {
      closed: this.times.filter((t) => this.closed.has(t)),
      running: this.times.length && !this.closed.has(this.times[this.times.length - 1]) ? this.bars.get(this.times[this.times.length - 1]) : null,
      last: this.times.length ? this.bars.get(this.times[this.times.length - 1]) : null,
      // What the fan draws, as the series hold it.
      forecast: this.forecast.data().map((d) => d.time),
      bands: this.bandLines.map((l) => ({ upper: l.upper.data().map((d) => [d.time, d.value]), lower: l.lower.data().map((d) => [d.time, d.value]) })),
    };
  }
}

function volBar(b) {
  return { time: b.time, value: b.volume, color: b.close >= b.open ? UP + "80" : DOWN + "80" };
}
