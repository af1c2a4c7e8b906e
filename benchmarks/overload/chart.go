package main

import (
	"fmt"
	"html"
	"io"
	"math"
	"strings"
	"time"
)

// Chart geometry, in SVG units.
const (
	chartWidth  = 980
	chartLeft   = 70  // room for the latency axis
	chartRight  = 60  // room for the cap axis
	chartTop    = 56  // room for the title and the legend
	panelHeight = 110 // one contender's panel
	panelGap    = 34  // between panels, room for the panel's title
	capTop      = 512 // the cap axis runs on a log scale from 1 to this
)

// chart writes an SVG with one panel per contender: the cap over time (blue,
// log scale, right axis), the p99 latency of useful tasks (red, left axis)
// and the useful throughput as a share of the capacity (grey area, 0 to
// 100% of the panel's height), each bucket the median over the runs.
func (rep *report) chart(w io.Writer) {
	s := rep.Settings
	total := float64(len(rep.Stages)) * ms(s.StageDuration)
	plotW := float64(chartWidth - chartLeft - chartRight)
	height := chartTop + len(rep.Setups)*(panelHeight+panelGap) + 20
	x := func(t float64) float64 { return chartLeft + plotW*t/total }

	fmt.Fprintf(w, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="11">`+"\n",
		chartWidth, height, chartWidth, height)
	fmt.Fprintf(w, `<rect width="%d" height="%d" fill="white"/>`+"\n", chartWidth, height)
	fmt.Fprintf(w, `<text x="%d" y="18" font-size="14" font-weight="bold">Overload: cap and p99 over time (%d slots × %v downstream, stages of %v)</text>`+"\n",
		chartLeft, s.Slots, s.Service, s.StageDuration)
	legend := []struct{ color, label string }{
		{"#1f77b4", "cap (right axis, log scale)"},
		{"#d62728", "p99 of useful tasks (left axis)"},
		{"#2ca02c", "downstream slots (right axis)"},
		{"#bbbbbb", "useful throughput / capacity (panel height = 100%)"},
	}
	for i, l := range legend {
		lx := chartLeft + []int{0, 175, 370, 560}[i]
		fmt.Fprintf(w, `<rect x="%d" y="30" width="14" height="8" fill="%s"/><text x="%d" y="38">%s</text>`+"\n",
			lx, l.color, lx+18, html.EscapeString(l.label))
	}

	for pi, c := range rep.Setups {
		top := float64(chartTop + pi*(panelHeight+panelGap) + panelGap - 10)
		bottom := top + panelHeight
		yLat := func(v float64) float64 { return bottom - panelHeight*math.Min(v/ms(s.Useful), 1) }
		yShare := func(v float64) float64 { return bottom - panelHeight*math.Min(math.Max(v, 0), 1) }
		yCap := func(v int) float64 {
			return bottom - panelHeight*math.Log2(float64(max(v, 1)))/math.Log2(capTop)
		}
		fmt.Fprintf(w, `<text x="%d" y="%.0f" font-weight="bold">%s</text>`+"\n", chartLeft, top-6, html.EscapeString(c.Name))
		fmt.Fprintf(w, `<rect x="%d" y="%.0f" width="%.0f" height="%d" fill="none" stroke="#888"/>`+"\n", chartLeft, top, plotW, panelHeight)
		// Axes: latency on the left, cap on the right.
		for _, v := range []float64{0, ms(s.Useful) / 2, ms(s.Useful)} {
			fmt.Fprintf(w, `<text x="%d" y="%.1f" text-anchor="end" fill="#d62728">%s</text>`+"\n", chartLeft-4, yLat(v)+4, fmtMs(v))
		}
		for _, v := range []int{1, 8, 64, 512} {
			fmt.Fprintf(w, `<text x="%d" y="%.1f" fill="#1f77b4">%d</text>`+"\n", chartWidth-chartRight+4, yCap(v)+4, v)
		}
		// Stage boundaries, named in the first panel.
		for k, st := range rep.Stages {
			sx := x(float64(k) * ms(s.StageDuration))
			if k > 0 {
				fmt.Fprintf(w, `<line x1="%.1f" y1="%.0f" x2="%.1f" y2="%.0f" stroke="#888" stroke-dasharray="3,3"/>`+"\n", sx, top, sx, bottom)
			}
			if pi == 0 {
				fmt.Fprintf(w, `<text x="%.1f" y="%.0f" fill="#555">%s</text>`+"\n", sx+3, top+12, html.EscapeString(st.Name))
			}
		}
		tl := rep.medianTimeline(c.Name)
		if len(tl) == 0 {
			continue
		}
		width := ms(s.Bucket)
		// Useful share: a grey step area.
		var area strings.Builder
		fmt.Fprintf(&area, "%.1f,%.1f", x(tl[0].T), bottom)
		for _, b := range tl {
			fmt.Fprintf(&area, " %.1f,%.1f %.1f,%.1f", x(b.T), yShare(b.Share), x(math.Min(b.T+width, total)), yShare(b.Share))
		}
		fmt.Fprintf(&area, " %.1f,%.1f", x(math.Min(tl[len(tl)-1].T+width, total)), bottom)
		fmt.Fprintf(w, `<polygon points="%s" fill="#bbbbbb" fill-opacity="0.5"/>`+"\n", area.String())
		// p99: a red line, broken where a bucket had no useful task.
		var seg []string
		flush := func() {
			if len(seg) > 1 {
				fmt.Fprintf(w, `<polyline points="%s" fill="none" stroke="#d62728" stroke-width="1.5"/>`+"\n", strings.Join(seg, " "))
			} else if len(seg) == 1 {
				var px, py float64
				fmt.Sscanf(seg[0], "%f,%f", &px, &py)
				fmt.Fprintf(w, `<circle cx="%.1f" cy="%.1f" r="1.5" fill="#d62728"/>`+"\n", px, py)
			}
			seg = seg[:0]
		}
		for _, b := range tl {
			if b.P99 < 0 {
				flush()
				continue
			}
			seg = append(seg, fmt.Sprintf("%.1f,%.1f", x(b.T+width/2), yLat(b.P99)))
		}
		flush()
		// The downstream's slots: the right cap, a green dashed step line.
		var slots strings.Builder
		for k, st := range rep.Stages {
			x0, x1 := x(float64(k)*ms(s.StageDuration)), x(float64(k+1)*ms(s.StageDuration))
			fmt.Fprintf(&slots, "%.1f,%.1f %.1f,%.1f ", x0, yCap(st.Slots), x1, yCap(st.Slots))
		}
		fmt.Fprintf(w, `<polyline points="%s" fill="none" stroke="#2ca02c" stroke-width="1" stroke-dasharray="4,2"/>`+"\n", strings.TrimSpace(slots.String()))
		// Cap: a blue step line.
		var capLine strings.Builder
		for i, b := range tl {
			if i > 0 {
				capLine.WriteByte(' ')
			}
			fmt.Fprintf(&capLine, "%.1f,%.1f %.1f,%.1f", x(b.T), yCap(b.Cap), x(math.Min(b.T+width, total)), yCap(b.Cap))
		}
		fmt.Fprintf(w, `<polyline points="%s" fill="none" stroke="#1f77b4" stroke-width="1.5"/>`+"\n", capLine.String())
	}
	fmt.Fprintf(w, `<text x="%d" y="%d" fill="#555">time → (%v in all)</text>`+"\n", chartLeft, height-6,
		time.Duration(len(rep.Stages))*s.StageDuration)
	fmt.Fprintln(w, "</svg>")
}

// medianTimeline is the contender's timeline with every bucket the median
// over its runs (p99 over the runs that had a useful task in the bucket).
func (rep *report) medianTimeline(name string) []bucket {
	var runs []*runResult
	for _, res := range rep.Runs {
		if res.Contender == name {
			runs = append(runs, res)
		}
	}
	if len(runs) == 0 {
		return nil
	}
	out := make([]bucket, len(runs[0].Timeline))
	for i := range out {
		var shares, p99s []float64
		var caps []int
		for _, res := range runs {
			b := res.Timeline[i]
			shares = append(shares, b.Share)
			caps = append(caps, b.Cap)
			if b.P99 >= 0 {
				p99s = append(p99s, b.P99)
			}
		}
		out[i] = runs[0].Timeline[i]
		out[i].Share = median(shares)
		out[i].Cap = medianInt(caps)
		out[i].P99 = -1
		if len(p99s) > 0 {
			out[i].P99 = median(p99s)
		}
	}
	return out
}
