// Command overload is an open-loop overload benchmark for worker pools.
//
// Every task calls one downstream that has -slots slots and serves a call
// in -service (8 and 10 ms: 800 calls a second); calls beyond the slots
// wait for one, and a call keeps its place even after its caller has given
// up (see downstream). A task has -patience (100 ms) once it starts, as
// WithTaskTimeout gives it, and is useful if it succeeded within -useful
// (250 ms) of its scheduled arrival.
//
// Arrivals follow a schedule laid out before the run (open loop): each has
// a due time, the generator submits it then without ever waiting on the
// pool (a refused task is counted refused), and latency is measured from
// the due time, so a slow pool cannot slow the arrivals down and hide its
// own latency (no coordinated omission). The generator sleeps until the
// next due time and submits everything due in one batch; how late it was
// (its own lag) is recorded for every arrival and reported, so that a
// pool's latency can be told from the generator's.
//
// The stages, each -stage-duration long: 0.5x the capacity, a 3x step, a
// ramp from 0.5x to 4x, the downstream losing half its slots (1x offered),
// and a recovery to 0.5x with all slots back.
//
// It writes overload.json (every run, with timelines), overload.md (the
// table of medians) and overload.svg (cap and p99 over time) into -out.
//
// Usage (inside benchmarks/):
//
//	go run ./overload                  # every contender once, about 2.5 minutes
//	go run ./overload -runs 3          # three runs, medians and spread: the README's table
//	go run ./overload -smoke           # about 2 s, into a temporary folder: for CI
//	go run ./overload -contenders bgpool-right,bgpool-tune -stage-duration 2s
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"
)

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

// settings are the command's flags, checked.
type settings struct {
	StageDuration time.Duration `json:"stage_duration"`
	Runs          int           `json:"runs"`
	Smoke         bool          `json:"smoke"`
	Slots         int           `json:"slots"`
	Service       time.Duration `json:"service"`
	Patience      time.Duration `json:"patience"`
	Useful        time.Duration `json:"useful"`
	Oversize      int           `json:"oversize"`
	Queue         int           `json:"queue"`
	Bucket        time.Duration `json:"bucket"`
	Contenders    []string      `json:"contenders"`
	out           string
	chosen        []contender
}

func parseFlags(args []string, stderr io.Writer) (settings, error) {
	var s settings
	fs := flag.NewFlagSet("overload", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.DurationVar(&s.StageDuration, "stage-duration", 4*time.Second, "length of each of the five stages")
	fs.IntVar(&s.Runs, "runs", 1, "runs of every contender (interleaved); the table shows medians and the spread")
	fs.BoolVar(&s.Smoke, "smoke", false, "a run of about 2 s that checks every contender runs and the output is well formed")
	fs.IntVar(&s.Slots, "slots", 8, "the downstream's slots (calls served at once)")
	fs.DurationVar(&s.Service, "service", 10*time.Millisecond, "the downstream's time per call")
	fs.DurationVar(&s.Patience, "patience", 100*time.Millisecond, "a task's timeout once it starts")
	fs.DurationVar(&s.Useful, "useful", 250*time.Millisecond, "a task is useful if it succeeded within this of its scheduled arrival")
	fs.IntVar(&s.Oversize, "oversize", 256, "the size of the pools that are far too large")
	fs.IntVar(&s.Queue, "queue", 1024, "the queue of the pools that are far too large")
	list := fs.String("contenders", "all", "comma-separated contenders to run, or all")
	fs.StringVar(&s.out, "out", "results", "folder for overload.json, overload.md and overload.svg (with -smoke: a temporary folder unless given)")
	if err := fs.Parse(args); err != nil {
		return s, err
	}
	if fs.NArg() > 0 {
		return s, fmt.Errorf("overload: unexpected arguments %q", fs.Args())
	}
	outGiven := false
	fs.Visit(func(f *flag.Flag) { outGiven = outGiven || f.Name == "out" })
	if s.Smoke {
		s.StageDuration, s.Runs = 60*time.Millisecond, 1
		if !outGiven {
			dir, err := os.MkdirTemp("", "overload-smoke-")
			if err != nil {
				return s, fmt.Errorf("overload: %w", err)
			}
			s.out = dir
		}
	}
	switch {
	case s.StageDuration <= 0:
		return s, fmt.Errorf("overload: -stage-duration %v: must be positive", s.StageDuration)
	case s.Runs < 1:
		return s, fmt.Errorf("overload: -runs %d: must be at least 1", s.Runs)
	case s.Slots < 1:
		return s, fmt.Errorf("overload: -slots %d: must be at least 1", s.Slots)
	case s.Service <= 0:
		return s, fmt.Errorf("overload: -service %v: must be positive", s.Service)
	case s.Patience <= 0:
		return s, fmt.Errorf("overload: -patience %v: must be positive", s.Patience)
	case s.Useful <= 0:
		return s, fmt.Errorf("overload: -useful %v: must be positive", s.Useful)
	case s.Oversize < 1 || s.Queue < 1:
		return s, fmt.Errorf("overload: -oversize %d, -queue %d: must be at least 1", s.Oversize, s.Queue)
	case s.out == "":
		return s, errors.New("overload: -out must name a folder")
	}
	chosen, err := lookupContenders(*list)
	if err != nil {
		return s, err
	}
	if len(chosen) == 0 {
		return s, errNoContenders
	}
	s.chosen = chosen
	for _, c := range chosen {
		s.Contenders = append(s.Contenders, c.Name)
	}
	// Forty buckets a stage: 100 ms at the default 4 s.
	s.Bucket = max(s.StageDuration/40, time.Millisecond)
	return s, nil
}

func run(args []string, stdout io.Writer) error {
	s, err := parseFlags(args, stdout)
	if err != nil {
		return err
	}
	st := stages(s.Slots)
	capacity := float64(s.Slots) / s.Service.Seconds()
	sched := schedule(st, s.StageDuration, capacity)
	fmt.Fprintf(stdout, "overload: %d stages of %v, %d arrivals a run, capacity %.0f/s, %d contender(s), %d run(s)\n",
		len(st), s.StageDuration, len(sched), capacity, len(s.chosen), s.Runs)

	rep := report{
		Machine:  machineInfo(),
		Settings: s,
		Stages:   st,
	}
	for _, c := range s.chosen {
		rep.Setups = append(rep.Setups, setup{Name: c.Name, Setup: c.Setup})
	}
	for r := range s.Runs {
		// Each run starts one contender later, so that a slow patch of the
		// machine does not always hit the same contender at the same point.
		order := append(slices.Clone(s.chosen[r%len(s.chosen):]), s.chosen[:r%len(s.chosen)]...)
		for _, c := range order {
			res, err := runOne(c, s, st, sched)
			if err != nil {
				return fmt.Errorf("overload: %s, run %d: %w", c.Name, r+1, err)
			}
			res.Run = r + 1
			res.analyse(s, st, sched)
			rep.Runs = append(rep.Runs, res)
			fmt.Fprintln(stdout, res.line())
			runtime.GC()
			if !s.Smoke {
				time.Sleep(200 * time.Millisecond) // let the last run's goroutines go
			}
		}
	}
	rep.summarise()
	if err := rep.write(s.out); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "overload: wrote %s\n", strings.Join(rep.files(s.out), ", "))
	if s.Smoke {
		if err := checkOutput(s.out, s.Contenders, len(st)); err != nil {
			return err
		}
		fmt.Fprintln(stdout, "overload: smoke run: every contender ran and the output is well formed")
	}
	return nil
}

// outcome is what became of one arrival.
type outcome uint8

const (
	unsubmitted outcome = iota // the run ended before it (never, once the generator is done)
	refused                    // the pool or its limiter refused it at submission
	discarded                  // accepted, then never run (dropped from the queue)
	succeeded                  // the downstream answered before the task's timeout
	timedOut                   // the task's context ended first
)

// record is one arrival's fate, all times since the run's start. The
// generator writes Lag and the refusal, the task writes Outcome and End,
// the downstream Served and ServedEnd, each before the run's teardown
// waits for it.
type record struct {
	Lag       time.Duration // how late the generator submitted it
	Outcome   outcome
	End       time.Duration // when the task returned
	Served    bool          // the downstream served the call to the end
	ServedEnd time.Duration
}

// sample is the contender's cap and the downstream's backlog at one time.
type sample struct {
	T       time.Duration `json:"t"`
	Cap     int           `json:"cap"`
	Backlog int           `json:"backlog"`
}

// runOne runs contender c through the whole schedule once.
func runOne(c contender, s settings, st []stage, sched []arrival) (*runResult, error) {
	recs := make([]record, len(sched))
	start := time.Now()
	ds := newDownstream(st[0].Slots, s.Service, start, func(i int, end time.Duration) {
		recs[i].Served, recs[i].ServedEnd = true, end
	})
	r, err := c.New(runConfig{Patience: s.Patience, Oversize: s.Oversize, Queue: s.Queue, Slots: s.Slots})
	if err != nil {
		ds.Close()
		return nil, err
	}

	// The downstream's slots change at each stage's start.
	var timers []*time.Timer
	for k := 1; k < len(st); k++ {
		slots := st[k].Slots
		timers = append(timers, time.AfterFunc(time.Until(start.Add(time.Duration(k)*s.StageDuration)), func() {
			ds.SetSlots(slots)
		}))
	}

	// The sampler records the cap and the backlog twice a bucket.
	var samples []sample
	stopSampling := make(chan struct{})
	var sampling sync.WaitGroup
	sampling.Go(func() {
		t := time.NewTicker(s.Bucket / 2)
		defer t.Stop()
		for {
			samples = append(samples, sample{T: time.Since(start), Cap: r.Cap(), Backlog: ds.Backlog()})
			select {
			case <-stopSampling: // the schedule is done
				return
			case <-t.C: // time for the next sample
			}
		}
	})

	generate(start, sched, recs, r, ds)

	close(stopSampling)
	sampling.Wait()
	for _, t := range timers {
		t.Stop()
	}
	closeErr := r.Close()
	ds.Close()
	for i := range recs {
		if recs[i].Outcome == unsubmitted {
			// Accepted but never run: the pool discarded it.
			recs[i].Outcome = discarded
		}
	}
	res := &runResult{Contender: c.Name, Samples: samples, recs: recs}
	return res, closeErr
}

// generate submits every arrival at its due time, from start: it sleeps
// until the next one is due, then submits all that are due, in one batch,
// and notes for each how late it was. It never waits on the pool.
func generate(start time.Time, sched []arrival, recs []record, r runner, ds *downstream) {
	for i := 0; i < len(sched); {
		now := time.Since(start)
		if wait := sched[i].At - now; wait > 0 {
			time.Sleep(wait)
			continue
		}
		for ; i < len(sched) && sched[i].At <= now; i++ {
			recs[i].Lag = time.Since(start) - sched[i].At
			idx := i
			if !r.TrySubmit(func(ctx context.Context) {
				err := ds.Call(ctx, idx)
				recs[idx].End = time.Since(start)
				if err == nil {
					recs[idx].Outcome = succeeded
				} else {
					recs[idx].Outcome = timedOut
				}
			}) {
				recs[i].Outcome = refused
			}
		}
	}
}

// machine describes where the run ran.
type machine struct {
	GOOS      string `json:"goos"`
	GOARCH    string `json:"goarch"`
	CPUs      int    `json:"cpus"`
	GoVersion string `json:"go_version"`
}

func machineInfo() machine {
	return machine{GOOS: runtime.GOOS, GOARCH: runtime.GOARCH, CPUs: runtime.NumCPU(), GoVersion: runtime.Version()}
}
