package main

import (
	"bytes"
	"fmt"
	"math"
	"time"
)

// latencyChart draws the median throughput of every client and connection count against the
// mock's answer latency, with the bound (connections x streams / latency) of each connection
// count as a dashed line. Latencies are evenly spaced, not to scale.
func latencyChart(results map[key][]result, keys []key, latencies []time.Duration, streams int) []byte {
	const w, h, left, top, plotW, plotH = 720, 380, 80, 40, 380, 280
	type series struct {
		name   string
		dashed bool
		y      []float64 // per latency; NaN where absent
	}
	var lines []series
	index := map[string]int{}
	top50 := 0.0
	for _, k := range keys {
		name := k.client
		if k.conns > 0 {
			name = fmt.Sprintf("%s, %d conn", k.client, k.conns)
		}
		i, ok := index[name]
		if !ok {
			i = len(lines)
			index[name] = i
			y := make([]float64, len(latencies))
			for j := range y {
				y[j] = math.NaN()
			}
			lines = append(lines, series{name: name, y: y})
		}
		var v []float64
		for _, r := range results[k] {
			v = append(v, r.perSecond())
		}
		m := median(v)
		for j, l := range latencies {
			if l == k.latency {
				lines[i].y[j] = m
			}
		}
		top50 = max(top50, m)
	}
	// The bounds of the connection counts measured, where they fit the chart.
	seen := map[int]bool{}
	for _, k := range keys {
		if k.conns == 0 || seen[k.conns] {
			continue
		}
		seen[k.conns] = true
		y := make([]float64, len(latencies))
		for j, l := range latencies {
			y[j] = math.NaN()
			if b := bound(k.conns, streams, l); b > 0 && b <= 1.5*top50 {
				y[j] = b
			}
		}
		lines = append(lines, series{name: fmt.Sprintf("bound, %d conn", k.conns), dashed: true, y: y})
	}
	ymax := top50
	for _, s := range lines {
		for _, v := range s.y {
			if !math.IsNaN(v) {
				ymax = max(ymax, v)
			}
		}
	}
	step := niceStep(ymax / 6)
	ymax = math.Ceil(ymax/step) * step
	x := func(j int) float64 {
		if len(latencies) == 1 {
			return left + plotW/2
		}
		return left + float64(j)*plotW/float64(len(latencies)-1)
	}
	y := func(v float64) float64 { return top + plotH - v/ymax*plotH }

	var b bytes.Buffer
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`+"\n", w, h, w, h)
	fmt.Fprintf(&b, `<rect width="%d" height="%d" fill="white"/>`+"\n", w, h)
	fmt.Fprintf(&b, `<text x="%d" y="22" font-size="14">HTTP/2: throughput against answer latency (medians; mock announcing %d streams)</text>`+"\n", left, streams)
	for v := 0.0; v <= ymax+step/2; v += step {
		fmt.Fprintf(&b, `<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="#ddd"/><text x="%d" y="%.1f" text-anchor="end">%s</text>`+"\n",
			left, left+plotW, y(v), y(v), left-6, y(v)+4, thousands(v))
	}
	for j, l := range latencies {
		fmt.Fprintf(&b, `<text x="%.1f" y="%d" text-anchor="middle">%v</text>`+"\n", x(j), top+plotH+18, l)
	}
	fmt.Fprintf(&b, `<text x="%d" y="%d" text-anchor="middle">answer latency (evenly spaced, not to scale)</text>`+"\n", left+plotW/2, top+plotH+38)
	fmt.Fprintf(&b, `<text x="18" y="%d" transform="rotate(-90 18 %d)" text-anchor="middle">notifications/s</text>`+"\n", top+plotH/2, top+plotH/2)
	colors := []string{"#1f77b4", "#2ca02c", "#d62728", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf"}
	for i, s := range lines {
		color, dash := colors[i%len(colors)], ""
		if s.dashed {
			color, dash = "#888", ` stroke-dasharray="5,4"`
			if i%2 == 1 {
				color = "#bbb"
			}
		}
		var pts bytes.Buffer
		for j, v := range s.y {
			if !math.IsNaN(v) {
				fmt.Fprintf(&pts, "%.1f,%.1f ", x(j), y(v))
			}
		}
		fmt.Fprintf(&b, `<polyline points="%s" fill="none" stroke="%s"%s stroke-width="2"/>`+"\n", bytes.TrimSpace(pts.Bytes()), color, dash)
		for j, v := range s.y {
			switch {
			case math.IsNaN(v):
			case s.dashed: // a bound: a tick, which shows where the line has one point
				fmt.Fprintf(&b, `<line x1="%.1f" x2="%.1f" y1="%.1f" y2="%.1f" stroke="%s" stroke-width="3"/>`+"\n", x(j)-12, x(j)+12, y(v), y(v), color)
			default:
				fmt.Fprintf(&b, `<circle cx="%.1f" cy="%.1f" r="3" fill="%s"/>`+"\n", x(j), y(v), color)
			}
		}
		ly := top + 10 + 20*i
		fmt.Fprintf(&b, `<line x1="%d" x2="%d" y1="%d" y2="%d" stroke="%s"%s stroke-width="2"/><text x="%d" y="%d">%s</text>`+"\n",
			left+plotW+14, left+plotW+34, ly, ly, color, dash, left+plotW+38, ly+4, s.name)
	}
	b.WriteString("</svg>\n")
	return b.Bytes()
}

// niceStep rounds v up to 1, 2 or 5 times a power of ten.
func niceStep(v float64) float64 {
	if v <= 0 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*p >= v {
			return m * p
		}
	}
	return 10 * p
}

// thousands formats v as an integer with commas.
func thousands(v float64) string {
	s := fmt.Sprintf("%.0f", v)
	var out []byte
	for i := range len(s) {
		if i > 0 && (len(s)-i)%3 == 0 {
			out = append(out, ',')
		}
		out = append(out, s[i])
	}
	return string(out)
}
