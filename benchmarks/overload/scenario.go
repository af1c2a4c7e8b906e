package main

import (
	"context"
	"math"
	"sync"
	"time"
)

// A stage is one part of the run: an offered rate that goes from From to To
// times the downstream's full capacity (linearly over the stage; equal for a
// steady rate) against a downstream with Slots slots.
type stage struct {
	Name  string  `json:"name"`
	From  float64 `json:"from"` // offered rate at the stage's start, times the full capacity
	To    float64 `json:"to"`   // offered rate at the stage's end, times the full capacity
	Slots int     `json:"slots"`
}

// stages is the scenario of the issue: a quiet start, a 3x step, a ramp
// from 0.5x to 4x, the downstream losing half its slots, and a recovery.
// The rates are multiples of the full capacity (slots/service), so in the
// stage with half the slots the offered 1x is twice what the downstream
// can take.
func stages(slots int) []stage {
	half := max(1, slots/2)
	return []stage{
		{Name: "baseline 0.5x", From: 0.5, To: 0.5, Slots: slots},
		{Name: "step 3x", From: 3, To: 3, Slots: slots},
		{Name: "ramp 0.5x-4x", From: 0.5, To: 4, Slots: slots},
		{Name: "half slots 1x", From: 1, To: 1, Slots: half},
		{Name: "recovery 0.5x", From: 0.5, To: 0.5, Slots: slots},
	}
}

// An arrival is one task of the schedule: when it is due, counted from the
// run's start, and the stage it belongs to.
type arrival struct {
	At    time.Duration
	Stage int
}

// schedule lays out every arrival of the run ahead of time: the i-th
// arrival of a stage is due when the stage's cumulative offered load
// reaches i tasks, so a steady stage is start + i/rate and a ramp solves
// rate0*t + (rate1-rate0)*t²/(2d) = i for t. capacity is the full
// capacity in tasks a second.
func schedule(st []stage, d time.Duration, capacity float64) []arrival {
	var out []arrival
	secs := d.Seconds()
	for k, s := range st {
		begin := time.Duration(k) * d
		r0, r1 := s.From*capacity, s.To*capacity
		a := (r1 - r0) / secs // the rate's slope, tasks/s²
		for i := 0; ; i++ {
			var t float64
			switch {
			case a == 0 && r0 <= 0:
				t = math.Inf(1)
			case a == 0:
				t = float64(i) / r0
			default:
				t = (-r0 + math.Sqrt(r0*r0+2*a*float64(i))) / a
			}
			if !(t < secs) {
				break
			}
			out = append(out, arrival{At: begin + time.Duration(t*float64(time.Second)), Stage: k})
		}
	}
	return out
}

// A downstream is the slow dependency every task calls: a database, say,
// with a fixed number of slots, each serving one call at a time for the
// service time. Calls beyond the slots wait for one, first come first
// served, which is what inflates latency under overload.
//
// It also models the collapse: a call cannot be withdrawn. Once a task has
// called, the call waits for its slot and holds it for the whole service
// time even if the task's caller has given up (the task's context ended);
// like a query a database has already received, that is work nobody will
// use, and it delays the calls behind it. Only Close discards the calls
// still waiting, so that a run ends.
//
// All methods are safe for concurrent use.
type downstream struct {
	service time.Duration
	start   time.Time

	mu      sync.Mutex
	limit   int            // slots now
	used    int            // slots held
	waiters []chan bool    // calls waiting for a slot, oldest first; true grants one
	closed  bool           // Close was called: no more calls are served
	calls   sync.WaitGroup // call goroutines not yet returned
	served  func(i int, end time.Duration)
}

// newDownstream returns a downstream with slots slots. served is told the
// arrival index and the time (since start) each call's service ended.
func newDownstream(slots int, service time.Duration, start time.Time, served func(i int, end time.Duration)) *downstream {
	return &downstream{service: service, start: start, limit: slots, served: served}
}

// Call makes the call for arrival i and waits for its answer, or for ctx to
// end, whichever comes first. It returns nil on an answer and ctx's error
// otherwise; in the second case the call goes on without its caller.
func (d *downstream) Call(ctx context.Context, i int) error {
	answered := make(chan struct{})
	d.calls.Add(1)
	go func() {
		defer d.calls.Done()
		if !d.acquire() {
			return
		}
		time.Sleep(d.service)
		d.release()
		d.served(i, time.Since(d.start))
		close(answered)
	}()
	select {
	case <-answered: // served in time for the caller
		return nil
	case <-ctx.Done(): // the caller gave up; the call still holds its place
		return ctx.Err()
	}
}

// acquire waits for a slot; it reports false if the downstream closed first.
func (d *downstream) acquire() bool {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return false
	}
	if d.used < d.limit && len(d.waiters) == 0 {
		d.used++
		d.mu.Unlock()
		return true
	}
	w := make(chan bool, 1)
	d.waiters = append(d.waiters, w)
	d.mu.Unlock()
	return <-w
}

func (d *downstream) release() {
	d.mu.Lock()
	d.used--
	d.grant()
	d.mu.Unlock()
}

// grant hands free slots to the oldest waiters. It requires d.mu.
func (d *downstream) grant() {
	for d.used < d.limit && len(d.waiters) > 0 {
		w := d.waiters[0]
		d.waiters[0] = nil
		d.waiters = d.waiters[1:]
		d.used++
		w <- true
	}
}

// SetSlots changes the number of slots. Calls in service keep theirs; a
// smaller number takes effect as they end.
func (d *downstream) SetSlots(n int) {
	d.mu.Lock()
	d.limit = n
	d.grant()
	d.mu.Unlock()
}

// Backlog reports the calls waiting for a slot.
func (d *downstream) Backlog() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.waiters)
}

// Close discards the calls still waiting for a slot and waits for the calls
// in service to end.
func (d *downstream) Close() {
	d.mu.Lock()
	d.closed = true
	for _, w := range d.waiters {
		w <- false
	}
	d.waiters = nil
	d.mu.Unlock()
	d.calls.Wait()
}
