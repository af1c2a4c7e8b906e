// The tests are in package main, not an external _test package: a main
// package cannot be imported.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/xml"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreCurrent())
}

func TestSmokeRunWritesWellFormedOutputForEveryContender(t *testing.T) {
	dir := t.TempDir()
	var out bytes.Buffer
	require.NoError(t, run([]string{"-smoke", "-out", dir}, &out), "output:\n%s", out.String())
	assert.Contains(t, out.String(), "every contender ran and the output is well formed")

	js, err := os.ReadFile(filepath.Join(dir, "overload.json"))
	require.NoError(t, err)
	var rep report
	require.NoError(t, json.Unmarshal(js, &rep))
	assert.Len(t, rep.Stages, 5)
	assert.Len(t, rep.Runs, len(contenders), "one run per contender")
	assert.Len(t, rep.Summary, len(contenders)*5, "one summary row per contender and stage")
	for _, c := range contenders {
		found := false
		for _, res := range rep.Runs {
			if res.Contender != c.Name {
				continue
			}
			found = true
			assert.Len(t, res.Stages, 5, c.Name)
			assert.NotEmpty(t, res.Timeline, c.Name)
			arrivals := 0
			for _, s := range res.Stages {
				arrivals += s.Arrivals
				assert.Equal(t, s.Arrivals, s.Useful+s.Refused+s.Dropped+s.TimedOut+s.Late, "%s %s: every arrival has one outcome", c.Name, s.Stage)
			}
			assert.Positive(t, arrivals, c.Name)
		}
		assert.True(t, found, "no run of %s", c.Name)
	}

	md, err := os.ReadFile(filepath.Join(dir, "overload.md"))
	require.NoError(t, err)
	assert.Contains(t, string(md), "| contender | stage |")
	for _, c := range contenders {
		assert.Equal(t, 5, strings.Count(string(md), "\n| "+c.Name+" |"), "rows of %s", c.Name)
	}

	svg, err := os.ReadFile(filepath.Join(dir, "overload.svg"))
	require.NoError(t, err)
	dec := xml.NewDecoder(bytes.NewReader(svg))
	var root string
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		require.NoError(t, err, "overload.svg is not well-formed XML")
		if se, ok := tok.(xml.StartElement); ok && root == "" {
			root = se.Name.Local
		}
	}
	assert.Equal(t, "svg", root)
	for _, c := range contenders {
		assert.Contains(t, string(svg), ">"+c.Name+"<", "a panel for %s", c.Name)
	}
}

func TestBadFlagsAreErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"no runs", []string{"-runs", "0"}, "-runs 0"},
		{"no stage time", []string{"-stage-duration", "0s"}, "-stage-duration 0s"},
		{"an unknown contender", []string{"-contenders", "bgpool-right,nope"}, `unknown contender "nope"`},
		{"no contenders", []string{"-contenders", ","}, "no contenders"},
		{"no slots", []string{"-slots", "0"}, "-slots 0"},
		{"a stray argument", []string{"extra"}, "unexpected arguments"},
		{"an unknown flag", []string{"-nope"}, "-nope"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := run(tc.args, io.Discard)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
}

func TestContendersAreChosenByNameInTheTablesOrder(t *testing.T) {
	got, err := lookupContenders(" failsafe-large, bgpool-right ")
	require.NoError(t, err)
	var names []string
	for _, c := range got {
		names = append(names, c.Name)
	}
	assert.Equal(t, []string{"bgpool-right", "failsafe-large"}, names)
}

func TestScheduleOffersEachStagesRate(t *testing.T) {
	st := stages(8)
	sched := schedule(st, time.Second, 800)
	count := make([]int, len(st))
	var last time.Duration
	for _, a := range sched {
		require.GreaterOrEqual(t, a.At, last, "arrivals are in order")
		last = a.At
		begin := time.Duration(a.Stage) * time.Second
		require.True(t, a.At >= begin && a.At < begin+time.Second, "arrival at %v lies in stage %d", a.At, a.Stage)
		count[a.Stage]++
	}
	// 0.5x, 3x, the ramp's mean 2.25x, 1x, 0.5x of 800/s for 1 s.
	assert.Equal(t, []int{400, 2400, 1800, 800, 400}, count)
	assert.Equal(t, 4, st[3].Slots, "the downstream loses half its slots")
}

func TestDownstreamServesACallWhoseCallerGaveUp(t *testing.T) {
	served := make(chan int, 2)
	ds := newDownstream(1, 5*time.Millisecond, time.Now(), func(i int, _ time.Duration) { served <- i })
	defer ds.Close()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err := ds.Call(ctx, 7)
	assert.ErrorIs(t, err, context.Canceled, "the caller gave up at once")
	assert.Equal(t, 7, <-served, "the call was served all the same")
	assert.NoError(t, ds.Call(context.Background(), 8), "a patient caller gets its answer")
	assert.Equal(t, 8, <-served)
}

func TestDownstreamCloseDiscardsTheCallsWaitingForASlot(t *testing.T) {
	served := make(chan int, 2)
	ds := newDownstream(0, time.Millisecond, time.Now(), func(i int, _ time.Duration) { served <- i })
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	// No slots: the call waits until Close discards it.
	assert.ErrorIs(t, ds.Call(ctx, 1), context.Canceled)
	ds.Close()
	assert.Empty(t, served, "a discarded call is not served")
	assert.Zero(t, ds.Backlog())
}

func TestDownstreamGrantsSlotsAddedLater(t *testing.T) {
	served := make(chan int, 1)
	ds := newDownstream(0, time.Millisecond, time.Now(), func(i int, _ time.Duration) { served <- i })
	defer ds.Close()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	require.ErrorIs(t, ds.Call(ctx, 3), context.Canceled)
	ds.SetSlots(1)
	assert.Equal(t, 3, <-served, "the waiting call takes the new slot")
}

func TestTuneRuleScalesTheCapByLowestOverMedianPlusTwo(t *testing.T) {
	ms := time.Millisecond
	assert.Equal(t, 130, tuneStep(256, 10*ms, 20*ms, 256), "half the median: half the cap, plus 2")
	assert.Equal(t, 10, tuneStep(8, 10*ms, 10*ms, 256), "at the lowest run time: grows by 2")
	assert.Equal(t, 256, tuneStep(256, 10*ms, 10*ms, 256), "never above the pool's size")
	assert.Equal(t, 2, tuneStep(1, 1*ms, 100*ms, 256), "never below 2 while tasks run")
}

// refuser refuses every task.
type refuser struct{}

func (refuser) TrySubmit(func(ctx context.Context)) bool { return false }
func (refuser) Cap() int                                 { return 0 }
func (refuser) Close() error                             { return nil }

func TestGeneratorSubmitsEveryArrivalAndNotesItsLag(t *testing.T) {
	sched := make([]arrival, 200)
	for i := range sched {
		sched[i].At = time.Duration(i) * 100 * time.Microsecond
	}
	recs := make([]record, len(sched))
	ds := newDownstream(1, time.Millisecond, time.Now(), func(int, time.Duration) {})
	defer ds.Close()
	start := time.Now()
	generate(start, sched, recs, refuser{}, ds)
	assert.GreaterOrEqual(t, time.Since(start), sched[len(sched)-1].At, "the generator keeps to the schedule, never ahead")
	for i, r := range recs {
		assert.Equal(t, refused, r.Outcome, "arrival %d", i)
		assert.GreaterOrEqual(t, r.Lag, time.Duration(0), "arrival %d is never submitted early", i)
	}
}

func TestAnalyseFindsWhenThroughputAndCapSettled(t *testing.T) {
	// One 1 s stage of 100 ms buckets against 1 slot of 10 ms (100/s, 10 a
	// bucket), offered 20 a bucket: nothing useful for 300 ms, then 9 of
	// the 10 possible a bucket.
	s := settings{StageDuration: time.Second, Bucket: 100 * time.Millisecond, Service: 10 * time.Millisecond,
		Useful: 250 * time.Millisecond}
	st := []stage{{Name: "only", From: 2, To: 2, Slots: 1}}
	var sched []arrival
	var recs []record
	for b := range 10 {
		for i := range 20 {
			at := time.Duration(b)*100*time.Millisecond + time.Duration(i)*5*time.Millisecond
			sched = append(sched, arrival{At: at})
			r := record{Outcome: refused}
			switch {
			case b >= 3 && i < 9:
				r = record{Outcome: succeeded, End: at + 20*time.Millisecond, Served: true}
			case b < 3 && i == 0:
				r = record{Outcome: timedOut, End: at + 100*time.Millisecond, Served: true} // wasted
			}
			recs = append(recs, r)
		}
	}
	var samples []sample
	for ts := time.Duration(0); ts < time.Second; ts += 50 * time.Millisecond {
		c := 256
		if ts >= 400*time.Millisecond {
			c = 10
		}
		samples = append(samples, sample{T: ts, Cap: c})
	}
	res := &runResult{Samples: samples, recs: recs}
	res.analyse(s, st, sched)
	require.Len(t, res.Stages, 1)
	got := res.Stages[0]
	assert.Equal(t, 300.0, got.Converge, "settled from the fourth bucket on")
	assert.Equal(t, 400.0, got.CapSettle, "the cap reached its final level at 400 ms")
	assert.Equal(t, 63, got.Useful)
	assert.Equal(t, 3, got.TimedOut)
	assert.Equal(t, 3, got.Wasted, "served for a caller that had timed out")
	assert.Equal(t, 20.0, got.P50, "latency from the scheduled arrival")
	assert.InDelta(t, 0.63, got.Share, 1e-9, "63 useful a second over a capacity of 100")
	assert.Equal(t, 10, got.CapMin)
	assert.Equal(t, 256, got.CapMax)
}
