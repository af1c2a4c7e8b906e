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
