package main

// This file owns bench's chart: a bar chart of throughput against workers, written as SVG by
// hand.

import (
	"bytes"
	"encoding/xml"
	"fmt"
	"math"
)

// Chart geometry, in SVG user units.
const (
	svgWidth, svgHeight = 560, 340
	plotLeft, plotRight = 80, 20
	plotTop, plotBottom = 50, 55
)

// throughputSVG draws the throughput of each run as a bar, labelled with its workers.
func throughputSVG(results []benchResult) []byte {
	var b bytes.Buffer
	pw := float64(svgWidth - plotLeft - plotRight)
	ph := float64(svgHeight - plotTop - plotBottom)
	x0, y0 := float64(plotLeft), float64(plotTop)+ph // the origin

	top := 0.0
	for _, r := range results {
		top = math.Max(top, r.PerSecond)
	}
	step := niceStep(top / 5)
	ymax := step * math.Max(1, math.Ceil(top/step))
	y := func(v float64) float64 { return y0 - v/ymax*ph }

	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`+"\n",
		svgWidth, svgHeight, svgWidth, svgHeight)
	fmt.Fprintf(&b, `<rect width="%d" height="%d" fill="white"/>`+"\n", svgWidth, svgHeight)
	title := "apns bench: throughput against workers"
	if len(results) > 0 {
		r := results[0]
		title = fmt.Sprintf("apns bench: %s, %d notifications of %d bytes", r.Protocol, r.N, r.PayloadBytes)
	}
	fmt.Fprintf(&b, `<text x="%d" y="24" text-anchor="middle" font-size="14">%s</text>`+"\n", svgWidth/2, escapeXML(title))

	// The y axis with its grid lines and labels.
	for v := 0.0; v <= ymax*1.0001; v += step {
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#ddd"/>`+"\n", x0, y(v), x0+pw, y(v))
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" text-anchor="end">%s</text>`+"\n", x0-6, y(v)+4, shortNumber(v))
	}
	fmt.Fprintf(&b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="black"/>`+"\n", x0, y0, x0, float64(plotTop))
	fmt.Fprintf(&b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="black"/>`+"\n", x0, y0, x0+pw, y0)
	fmt.Fprintf(&b, `<text x="18" y="%.1f" text-anchor="middle" transform="rotate(-90 18 %.1f)">notifications per second</text>`+"\n",
		y0-ph/2, y0-ph/2)
	fmt.Fprintf(&b, `<text x="%.1f" y="%d" text-anchor="middle">workers (connections)</text>`+"\n", x0+pw/2, svgHeight-12)

	// One bar per run.
	if len(results) > 0 {
		slot := pw / float64(len(results))
		for i, r := range results {
			bx := x0 + float64(i)*slot + slot*0.2
			by := y(r.PerSecond)
			fmt.Fprintf(&b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="#4a7bd0"/>`+"\n", bx, by, slot*0.6, y0-by)
			fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" text-anchor="middle">%s</text>`+"\n", bx+slot*0.3, by-5, shortNumber(r.PerSecond))
			fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" text-anchor="middle">%d</text>`+"\n", bx+slot*0.3, y0+18, r.Workers)
		}
	}
	b.WriteString("</svg>\n")
	return b.Bytes()
}

// niceStep returns the smallest of 1, 2 or 5 times a power of ten that is at least v (1 for
// v <= 0).
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

// shortNumber writes v with a k or M suffix: 1500 -> 1.5k.
func shortNumber(v float64) string {
	switch {
	case v >= 1e6:
		return trimZero(fmt.Sprintf("%.1f", v/1e6)) + "M"
	case v >= 1e3:
		return trimZero(fmt.Sprintf("%.1f", v/1e3)) + "k"
	default:
		return fmt.Sprintf("%.0f", v)
	}
}

func trimZero(s string) string {
	if len(s) > 2 && s[len(s)-2:] == ".0" {
		return s[:len(s)-2]
	}
	return s
}

func escapeXML(s string) string {
	var b bytes.Buffer
	_ = xml.EscapeText(&b, []byte(s))
	return b.String()
}
