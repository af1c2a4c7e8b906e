package main

import (
	"encoding/json"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// report is everything overload.json holds.
type report struct {
	Machine  machine      `json:"machine"`
	Settings settings     `json:"settings"`
	Stages   []stage      `json:"stages"`
	Setups   []setup      `json:"contenders"`
	Runs     []*runResult `json:"runs"`
	Summary  []summary    `json:"summary"`
	// GeneratorLag is the generator's own lag over every arrival of every run.
	GeneratorLag lag `json:"generator_lag"`
}

type setup struct {
	Name  string `json:"name"`
	Setup string `json:"setup"`
}

// runResult is one run of one contender.
type runResult struct {
	Run       int           `json:"run"`
	Contender string        `json:"contender"`
	Stages    []stageResult `json:"stages"`
	Timeline  []bucket      `json:"timeline"`
	Samples   []sample      `json:"-"` // in the timeline, two a bucket

	Lag  lag `json:"generator_lag"`
	recs []record
}

// stageResult is what one stage of one run came to. Rates are per second,
// times in milliseconds; counts are tasks that arrived in the stage.
type stageResult struct {
	Stage       string  `json:"stage"`
	OfferedRate float64 `json:"offered_per_s"`
	Capacity    float64 `json:"capacity_per_s"`
	UsefulRate  float64 `json:"useful_per_s"`
	Share       float64 `json:"useful_share"` // UsefulRate / Capacity
	P50         float64 `json:"p50_ms"`       // of useful tasks, from scheduled arrival to return; -1 if none
	P99         float64 `json:"p99_ms"`
	Arrivals    int     `json:"arrivals"`
	Useful      int     `json:"useful"`
	Refused     int     `json:"refused"`
	Dropped     int     `json:"dropped"`   // accepted, then discarded unrun
	TimedOut    int     `json:"timed_out"` // ran, and the task's timeout ended it first
	Late        int     `json:"late"`      // succeeded, but after the useful window
	Served      int     `json:"served"`    // calls the downstream served to the end
	Wasted      int     `json:"wasted"`    // served, but not useful: the caller had given up or was too late
	CapMin      int     `json:"cap_min"`
	CapMedian   int     `json:"cap_median"`
	CapMax      int     `json:"cap_max"`
	BacklogMax  int     `json:"backlog_max"` // the most calls seen waiting for a downstream slot
	// Converge is the time from the stage's start until useful throughput
	// settled for good: from then to the stage's end, every window of
	// settleWindow buckets has at least settleShare of the useful tasks
	// that the offered rate and the capacity allow; -1 if it never did.
	Converge float64 `json:"converge_ms"`
	// CapSettle is the time from the stage's start until the cap stayed
	// within a quarter (at least 2) of where it ended: the median cap of
	// the stage's last quarter. It is 0 for a fixed cap.
	CapSettle float64 `json:"cap_settle_ms"`
	// The stage from settleAfter on, where the goals are measured:
	// useful share, p99 of useful tasks, and the highest cap.
	LateShare  float64 `json:"useful_share_after_1s"`
	LateP99    float64 `json:"p99_after_1s_ms"`
	LateCapMax int     `json:"cap_max_after_1s"`
	Lag        lag     `json:"generator_lag"`
}

// settleAfter is how long after a stage's start the goals give a
// controller to settle: the figures "after 1 s" leave it out.
const settleAfter = time.Second

// lag summarises how late the generator submitted arrivals, in ms.
type lag struct {
	P50 float64 `json:"p50_ms"`
	P99 float64 `json:"p99_ms"`
	Max float64 `json:"max_ms"`
}

// bucket is a slice of the run by scheduled arrival.
type bucket struct {
	T       float64 `json:"t_ms"` // start, since the run's start
	Offered int     `json:"offered"`
	Useful  int     `json:"useful"`
	Share   float64 `json:"useful_share"` // useful throughput over the capacity
	P99     float64 `json:"p99_ms"`       // of useful tasks; -1 if none
	Cap     int     `json:"cap"`          // median cap sampled in the bucket
	Backlog int     `json:"backlog"`      // median downstream backlog sampled in the bucket
}

// summary is one contender's stage over all runs: medians, and the lowest
// and highest of the figures that spread most.
type summary struct {
	Contender string      `json:"contender"`
	Median    stageResult `json:"median"`
	ShareMin  float64     `json:"useful_share_min"`
	ShareMax  float64     `json:"useful_share_max"`
	P99Min    float64     `json:"p99_ms_min"`
	P99Max    float64     `json:"p99_ms_max"`
	Runs      int         `json:"runs"`
}

// A stage has settled when every window of settleWindow buckets (500 ms at
// the default stage length) to its end has at least settleShare of the
// useful tasks the offered rate and the capacity allow. The share is below
// 1 because a 10 ms sleep takes a little longer on a busy machine, which
// leaves the real capacity a few per cent under the nominal one.
const (
	settleWindow = 5
	settleShare  = 0.8
)

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// quantile returns the q-quantile of sorted (nearest rank), -1 if empty.
func quantile(sorted []time.Duration, q float64) float64 {
	if len(sorted) == 0 {
		return -1
	}
	i := int(math.Ceil(q*float64(len(sorted)))) - 1
	return ms(sorted[min(max(i, 0), len(sorted)-1)])
}

func lagOf(l []time.Duration) lag {
	slices.Sort(l)
	if len(l) == 0 {
		return lag{}
	}
	return lag{P50: quantile(l, 0.5), P99: quantile(l, 0.99), Max: ms(l[len(l)-1])}
}

func medianInt(v []int) int {
	if len(v) == 0 {
		return 0
	}
	v = slices.Clone(v)
	slices.Sort(v)
	return v[len(v)/2]
}

// analyse turns the run's records and samples into stages and a timeline.
func (res *runResult) analyse(s settings, st []stage, sched []arrival) {
	d := s.StageDuration
	perStage := int(math.Ceil(float64(d) / float64(s.Bucket)))
	type acc struct {
		useful []time.Duration
		late   []time.Duration // useful, arrived settleAfter or more into the stage
		lags   []time.Duration
		r      stageResult
		caps   []int
		capAt  []time.Duration // when each of caps was sampled, since the stage's start
	}
	accs := make([]acc, len(st))
	buckets := make([]bucket, len(st)*perStage)
	bucketLat := make([][]time.Duration, len(buckets))
	for i := range buckets {
		k, b := i/perStage, i%perStage
		buckets[i].T = ms(time.Duration(k)*d + time.Duration(b)*s.Bucket)
	}
	var allLags []time.Duration
	for i, a := range sched {
		rec := res.recs[i]
		k := a.Stage
		ac := &accs[k]
		b := k*perStage + min(int((a.At-time.Duration(k)*d)/s.Bucket), perStage-1)
		buckets[b].Offered++
		ac.r.Arrivals++
		ac.lags = append(ac.lags, rec.Lag)
		allLags = append(allLags, rec.Lag)
		useful := false
		switch rec.Outcome {
		case refused:
			ac.r.Refused++
		case discarded:
			ac.r.Dropped++
		case timedOut:
			ac.r.TimedOut++
		case succeeded:
			if lat := rec.End - a.At; lat <= s.Useful {
				useful = true
				ac.useful = append(ac.useful, lat)
				if a.At-time.Duration(k)*d >= settleAfter {
					ac.late = append(ac.late, lat)
				}
				bucketLat[b] = append(bucketLat[b], lat)
			} else {
				ac.r.Late++
			}
		}
		if useful {
			ac.r.Useful++
			buckets[b].Useful++
		}
		if rec.Served {
			ac.r.Served++
			if !useful {
				ac.r.Wasted++
			}
		}
	}
	// Samples by time: caps per stage, cap and backlog per bucket.
	bucketCaps := make([][]int, len(buckets))
	bucketBacklog := make([][]int, len(buckets))
	for _, sm := range res.Samples {
		k := min(int(sm.T/d), len(st)-1)
		b := k*perStage + min(int((sm.T-time.Duration(k)*d)/s.Bucket), perStage-1)
		accs[k].caps = append(accs[k].caps, sm.Cap)
		accs[k].capAt = append(accs[k].capAt, sm.T-time.Duration(k)*d)
		accs[k].r.BacklogMax = max(accs[k].r.BacklogMax, sm.Backlog)
		if sm.T-time.Duration(k)*d >= settleAfter {
			accs[k].r.LateCapMax = max(accs[k].r.LateCapMax, sm.Cap)
		}
		bucketCaps[b] = append(bucketCaps[b], sm.Cap)
		bucketBacklog[b] = append(bucketBacklog[b], sm.Backlog)
	}
	for i := range buckets {
		slices.Sort(bucketLat[i])
		buckets[i].P99 = quantile(bucketLat[i], 0.99)
		buckets[i].Cap = medianInt(bucketCaps[i])
		buckets[i].Backlog = medianInt(bucketBacklog[i])
	}
	for i := range buckets {
		if buckets[i].Cap == 0 && i > 0 {
			buckets[i].Cap = buckets[i-1].Cap // no sample fell in this bucket
		}
	}
	res.Stages = make([]stageResult, len(st))
	for k, sg := range st {
		ac := &accs[k]
		r := ac.r
		r.Stage = sg.Name
		r.OfferedRate = float64(r.Arrivals) / d.Seconds()
		r.Capacity = float64(sg.Slots) / s.Service.Seconds()
		r.UsefulRate = float64(r.Useful) / d.Seconds()
		r.Share = r.UsefulRate / r.Capacity
		slices.Sort(ac.useful)
		r.P50, r.P99 = quantile(ac.useful, 0.5), quantile(ac.useful, 0.99)
		slices.Sort(ac.late)
		r.LateP99 = quantile(ac.late, 0.99)
		if rest := d - settleAfter; rest > 0 {
			r.LateShare = float64(len(ac.late)) / rest.Seconds() / r.Capacity
		}
		r.Lag = lagOf(ac.lags)
		if len(ac.caps) > 0 {
			r.CapMin, r.CapMax = slices.Min(ac.caps), slices.Max(ac.caps)
			r.CapMedian = medianInt(ac.caps)
			r.CapSettle = capSettle(ac.caps, ac.capAt, d)
		}
		// Convergence: the start of the last unbroken run of settled
		// windows, if that run reaches the stage's end.
		useful := make([]float64, perStage)
		allowed := make([]float64, perStage)
		for b := range perStage {
			bk := buckets[k*perStage+b]
			width := min(s.Bucket, d-time.Duration(b)*s.Bucket)
			useful[b] = float64(bk.Useful)
			allowed[b] = min(float64(bk.Offered), r.Capacity*width.Seconds())
		}
		r.Converge = -1
		for b := perStage - 1; b >= 0; b-- {
			var u, a float64
			for j := b; j < min(b+settleWindow, perStage); j++ {
				u, a = u+useful[j], a+allowed[j]
			}
			if u < settleShare*a {
				break
			}
			r.Converge = ms(time.Duration(b) * s.Bucket)
		}
		for b := range perStage {
			bk := &buckets[k*perStage+b]
			width := min(s.Bucket, d-time.Duration(b)*s.Bucket)
			bk.Share = float64(bk.Useful) / (r.Capacity * width.Seconds())
		}
		res.Stages[k] = r
	}
	res.Timeline = buckets
	res.Lag = lagOf(allLags)
}

// line is the run's one-line summary for the terminal.
func (res *runResult) line() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%-15s run %d:", res.Contender, res.Run)
	for _, s := range res.Stages {
		fmt.Fprintf(&b, "  %s %.0f%% p99 %s (after 1 s %s, cap ≤%d)", s.Stage, 100*s.Share, fmtMs(s.P99), fmtMs(s.LateP99), s.LateCapMax)
	}
	fmt.Fprintf(&b, "  (generator lag p99 %.2fms)", res.Lag.P99)
	return b.String()
}

// summarise fills in the medians over runs, per contender and stage.
func (rep *report) summarise() {
	var lags []time.Duration
	for _, res := range rep.Runs {
		for _, r := range res.recs {
			lags = append(lags, r.Lag)
		}
	}
	rep.GeneratorLag = lagOf(lags)
	rep.Summary = nil
	for _, c := range rep.Setups {
		var runs []*runResult
		for _, res := range rep.Runs {
			if res.Contender == c.Name {
				runs = append(runs, res)
			}
		}
		if len(runs) == 0 {
			continue
		}
		for k := range rep.Stages {
			col := func(f func(stageResult) float64) []float64 {
				var v []float64
				for _, res := range runs {
					v = append(v, f(res.Stages[k]))
				}
				return v
			}
			icol := func(f func(stageResult) int) int {
				var v []int
				for _, res := range runs {
					v = append(v, f(res.Stages[k]))
				}
				return medianInt(v)
			}
			m := runs[0].Stages[k]
			m.OfferedRate = median(col(func(r stageResult) float64 { return r.OfferedRate }))
			m.UsefulRate = median(col(func(r stageResult) float64 { return r.UsefulRate }))
			shares := col(func(r stageResult) float64 { return r.Share })
			m.Share = median(shares)
			m.P50 = median(col(func(r stageResult) float64 { return r.P50 }))
			p99s := col(func(r stageResult) float64 { return r.P99 })
			m.P99 = median(p99s)
			m.CapSettle = median(col(func(r stageResult) float64 { return r.CapSettle }))
			m.LateShare = median(col(func(r stageResult) float64 { return r.LateShare }))
			m.LateP99 = median(col(func(r stageResult) float64 { return r.LateP99 }))
			m.LateCapMax = icol(func(r stageResult) int { return r.LateCapMax })
			m.Converge = medianConverge(col(func(r stageResult) float64 { return r.Converge }))
			m.Arrivals = icol(func(r stageResult) int { return r.Arrivals })
			m.Useful = icol(func(r stageResult) int { return r.Useful })
			m.Refused = icol(func(r stageResult) int { return r.Refused })
			m.Dropped = icol(func(r stageResult) int { return r.Dropped })
			m.TimedOut = icol(func(r stageResult) int { return r.TimedOut })
			m.Late = icol(func(r stageResult) int { return r.Late })
			m.Served = icol(func(r stageResult) int { return r.Served })
			m.Wasted = icol(func(r stageResult) int { return r.Wasted })
			m.CapMin = icol(func(r stageResult) int { return r.CapMin })
			m.CapMedian = icol(func(r stageResult) int { return r.CapMedian })
			m.CapMax = icol(func(r stageResult) int { return r.CapMax })
			m.BacklogMax = icol(func(r stageResult) int { return r.BacklogMax })
			m.Lag.P50 = median(col(func(r stageResult) float64 { return r.Lag.P50 }))
			m.Lag.P99 = median(col(func(r stageResult) float64 { return r.Lag.P99 }))
			m.Lag.Max = median(col(func(r stageResult) float64 { return r.Lag.Max }))
			rep.Summary = append(rep.Summary, summary{
				Contender: c.Name, Median: m, Runs: len(runs),
				ShareMin: slices.Min(shares), ShareMax: slices.Max(shares),
				P99Min: slices.Min(p99s), P99Max: slices.Max(p99s),
			})
		}
	}
}

// capSettle returns when, in ms since the stage's start, the cap came
// within a quarter (at least 2) of its final level for good.
func capSettle(caps []int, at []time.Duration, d time.Duration) float64 {
	var tail []int
	for i, c := range caps {
		if at[i] >= d*3/4 {
			tail = append(tail, c)
		}
	}
	if len(tail) == 0 {
		tail = caps[len(caps)-1:]
	}
	final := medianInt(tail)
	band := max(2, final/4)
	settle := 0.0
	for i := len(caps) - 1; i >= 0; i-- {
		if caps[i] < final-band || caps[i] > final+band {
			if i+1 < len(caps) {
				settle = ms(at[i+1])
			} else {
				settle = ms(d)
			}
			break
		}
	}
	return settle
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	v = slices.Clone(v)
	slices.Sort(v)
	return v[len(v)/2]
}

// medianConverge is the median convergence time, counting "never" (-1)
// as longer than any; -1 if the median run never converged.
func medianConverge(v []float64) float64 {
	for i := range v {
		if v[i] < 0 {
			v[i] = math.Inf(1)
		}
	}
	m := median(v)
	if math.IsInf(m, 1) {
		return -1
	}
	return m
}

func fmtMs(v float64) string {
	switch {
	case v < 0:
		return "—"
	case v >= 1000:
		return fmt.Sprintf("%.2fs", v/1000)
	case v >= 10:
		return fmt.Sprintf("%.0fms", v)
	default:
		return fmt.Sprintf("%.1fms", v)
	}
}

func (rep *report) files(dir string) []string {
	return []string{
		filepath.Join(dir, "overload.json"),
		filepath.Join(dir, "overload.md"),
		filepath.Join(dir, "overload.svg"),
	}
}

// write writes overload.json, overload.md and overload.svg into dir.
func (rep *report) write(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("overload: %w", err)
	}
	f := rep.files(dir)
	// Compact: the timelines would take a line a field, a megabyte in all.
	js, err := json.Marshal(rep)
	if err != nil {
		return fmt.Errorf("overload: %w", err)
	}
	var md, svg strings.Builder
	rep.markdown(&md)
	rep.chart(&svg)
	for i, body := range [][]byte{append(js, '\n'), []byte(md.String()), []byte(svg.String())} {
		if err := os.WriteFile(f[i], body, 0o644); err != nil {
			return fmt.Errorf("overload: %w", err)
		}
	}
	return nil
}

// markdown writes the table of medians.
func (rep *report) markdown(w io.Writer) {
	s := rep.Settings
	runs := 1
	if len(rep.Summary) > 0 {
		runs = rep.Summary[0].Runs
	}
	fmt.Fprintf(w, "Downstream: %d slots × %v a call (%.0f calls/s); patience %v once a task starts; useful = succeeded within %v of its scheduled arrival. Stages of %v. ",
		s.Slots, s.Service, float64(s.Slots)/s.Service.Seconds(), s.Patience, s.Useful, s.StageDuration)
	if runs > 1 {
		fmt.Fprintf(w, "Median of %d runs; the spread (lowest–highest) in brackets.\n\n", runs)
	} else {
		fmt.Fprintf(w, "One run.\n\n")
	}
	fmt.Fprintf(w, "Machine: %s/%s, %d CPUs, %s. Generator lag over every arrival: p50 %s, p99 %s, max %s.\n\n",
		rep.Machine.GOOS, rep.Machine.GOARCH, rep.Machine.CPUs, rep.Machine.GoVersion,
		fmtMs(rep.GeneratorLag.P50), fmtMs(rep.GeneratorLag.P99), fmtMs(rep.GeneratorLag.Max))
	fmt.Fprintln(w, "| contender | stage | offered/s | capacity/s | useful/s | useful share | p50 | p99 | cap (median, min–max) | cap settled after | converged after | after 1 s: share, p99, cap max | refused | dropped | timed out | late | wasted | downstream backlog (max) | generator lag p99 |")
	fmt.Fprintln(w, "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
	for _, sm := range rep.Summary {
		m := sm.Median
		share := fmt.Sprintf("%.0f%%", 100*m.Share)
		p99 := fmtMs(m.P99)
		if sm.Runs > 1 {
			share += fmt.Sprintf(" (%.0f–%.0f%%)", 100*sm.ShareMin, 100*sm.ShareMax)
			p99 += fmt.Sprintf(" (%s–%s)", fmtMs(sm.P99Min), fmtMs(sm.P99Max))
		}
		conv := "not settled"
		if m.Converge >= 0 {
			conv = fmtMs(m.Converge)
		}
		capCell := fmt.Sprintf("%d", m.CapMedian)
		if m.CapMin != m.CapMax {
			capCell = fmt.Sprintf("%d (%d–%d)", m.CapMedian, m.CapMin, m.CapMax)
		}
		late := fmt.Sprintf("%.0f%%, %s, %d", 100*m.LateShare, fmtMs(m.LateP99), m.LateCapMax)
		fmt.Fprintf(w, "| %s | %s | %.0f | %.0f | %.0f | %s | %s | %s | %s | %s | %s | %s | %d | %d | %d | %d | %d | %d | %s |\n",
			sm.Contender, m.Stage, m.OfferedRate, m.Capacity, m.UsefulRate, share, fmtMs(m.P50), p99,
			capCell, fmtMs(m.CapSettle), conv, late, m.Refused, m.Dropped, m.TimedOut, m.Late, m.Wasted, m.BacklogMax, fmtMs(m.Lag.P99))
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Counts are tasks that arrived in the stage (medians). Useful share: useful tasks a second over the stage's capacity. "+
		"p50, p99: of useful tasks, from the scheduled arrival to the task's return. "+
		"Cap settled after: until the cap stayed within a quarter of where it ended. "+
		"After 1 s: the stage without its first second, where the goals are measured (useful share, p99 of useful tasks, highest cap). "+
		"Converged after: until every 500 ms window to the stage's end had at least 80% of the useful tasks the offered rate and the capacity allow. "+
		"Dropped: accepted, then discarded unrun. Timed out: the task's timeout ended it first. Late: succeeded after the useful window. "+
		"Wasted: calls the downstream served to the end whose task had already timed out or answered too late. "+
		"Downstream backlog: the most calls seen waiting for a slot, abandoned ones included. "+
		"Generator lag: how late the generator itself submitted arrivals (a floor under every latency).")
}

// checkOutput reads back what a run wrote into dir and reports whether it
// is well formed: the JSON parses and has every contender with every
// stage, each of which had calls served; the table has a row for each
// contender; the chart is well-formed XML with an svg root.
func checkOutput(dir string, names []string, nStages int) error {
	js, err := os.ReadFile(filepath.Join(dir, "overload.json"))
	if err != nil {
		return fmt.Errorf("overload: check: %w", err)
	}
	var rep report
	if err := json.Unmarshal(js, &rep); err != nil {
		return fmt.Errorf("overload: check: overload.json: %w", err)
	}
	for _, n := range names {
		found := false
		for _, res := range rep.Runs {
			if res.Contender != n {
				continue
			}
			found = true
			if len(res.Stages) != nStages {
				return fmt.Errorf("overload: check: %s: %d stages, want %d", n, len(res.Stages), nStages)
			}
			served := 0
			for _, s := range res.Stages {
				served += s.Served
			}
			if served == 0 {
				return fmt.Errorf("overload: check: %s: the downstream served none of its calls", n)
			}
		}
		if !found {
			return fmt.Errorf("overload: check: %s: no run in overload.json", n)
		}
	}
	md, err := os.ReadFile(filepath.Join(dir, "overload.md"))
	if err != nil {
		return fmt.Errorf("overload: check: %w", err)
	}
	for _, n := range names {
		if !strings.Contains(string(md), "\n| "+n+" |") {
			return fmt.Errorf("overload: check: overload.md has no row for %s", n)
		}
	}
	svg, err := os.ReadFile(filepath.Join(dir, "overload.svg"))
	if err != nil {
		return fmt.Errorf("overload: check: %w", err)
	}
	return checkSVG(svg)
}

func checkSVG(svg []byte) error {
	dec := xml.NewDecoder(strings.NewReader(string(svg)))
	root := ""
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("overload: check: overload.svg: %w", err)
		}
		if se, ok := tok.(xml.StartElement); ok && root == "" {
			root = se.Name.Local
		}
	}
	if root != "svg" {
		return fmt.Errorf("overload: check: overload.svg: root element %q, want svg", root)
	}
	return nil
}
