package bgpool

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// A MiddlewareOption configures Middleware. An invalid option makes
// Middleware panic at construction, never at request time.
type MiddlewareOption interface {
	apply(*middlewareOptions)
}

type middlewareOptionFunc func(*middlewareOptions)

func (f middlewareOptionFunc) apply(o *middlewareOptions) { f(o) }

// middlewareOptions holds Middleware's configuration; the zero value of every
// field is the default.
type middlewareOptions struct {
	shed          bool
	retryAfter    string // Retry-After value in whole seconds, set with shed
	afterResponse bool
}

// WithShedding makes Middleware answer requests itself, without calling the
// handler, while the pool cannot admit a task: no worker is idle and the
// queue is full (or other submitters are already waiting for room), or
// Shutdown has begun. Such requests get 503 Service Unavailable, a
// Retry-After header of retryAfter in whole seconds (rounded up, at least 1)
// and a short plain-text body. Each is counted in Stats.Shed (exported by
// the contrib/prometheus collector as bgpool_requests_shed_total).
//
// The check takes no lock and is made as the request arrives, so a request
// that passed it may still find the pool full when it calls Go: handlers
// should still handle ErrOverloaded. The default is no shedding.
func WithShedding(retryAfter time.Duration) MiddlewareOption {
	secs := int64(retryAfter / time.Second) // divided first: rounding up by adding could overflow
	if retryAfter%time.Second > 0 {
		secs++
	}
	secs = max(1, secs)
	return middlewareOptionFunc(func(o *middlewareOptions) {
		o.shed = true
		o.retryAfter = strconv.FormatInt(secs, 10)
	})
}

// WithAfterResponse makes Go keep the tasks of a request and hand them to
// the pool only once the handler has returned, in the order Go was called:
// the order of Starlette's and FastAPI's BackgroundTasks. Go then returns nil
// at once; a task's context carries the values of the request's context as
// it was when Go was called.
//
// If the handler panics (or calls runtime.Goexit), its kept tasks are
// discarded, as Starlette discards the background tasks of a request that
// failed: they are counted Submitted and Dropped, each is reported to the
// error handler, and the panic goes on to the server untouched: Middleware
// does not recover it, so http.ErrAbortHandler and the original stack trace
// reach the server or an outer recoverer as they were.
//
// The kept tasks never hold the response: with a chunked body the client
// sees its end only when ServeHTTP returns. Those that a free worker or the
// queue's room admit at once are submitted on the handler's goroutine.
// From the first that finds no room on, the rest go, in order, to a
// goroutine of their own, where the pool's policy decides (CallerRuns runs
// them there); Block and BlockFor give up at once. Meanwhile they count as
// Waiting. A task not admitted is counted Rejected, and its error (matching
// ErrOverloaded or ErrClosed) goes to the error handler with the request's
// values in its context. Go called after the handler has returned (from a
// goroutine it started) submits at once, with the request's context, which
// the server has cancelled by then.
//
// The default is to submit each task when Go is called.
func WithAfterResponse() MiddlewareOption {
	return middlewareOptionFunc(func(o *middlewareOptions) {
		o.afterResponse = true
	})
}

// requestKey is the context key under which Middleware stores a request's
// *requestState.
type requestKey struct{}

// requestState is what Middleware attaches to a request's context.
type requestState struct {
	pool *Pool
	kept *keptTasks // nil without WithAfterResponse
}

// keptTasks holds the tasks Go kept for after the handler (WithAfterResponse).
// A handler may call Go from several goroutines, hence the mutex.
type keptTasks struct {
	mu       sync.Mutex
	tasks    []item
	returned bool // the handler has returned; Go submits directly
}

// Middleware returns HTTP middleware that attaches p to every request's
// context, so that the handler can submit background tasks with Go (or find
// the pool with FromContext). It works with any router that accepts
// func(http.Handler) http.Handler middleware: net/http's ServeMux, chi,
// gorilla/mux and the like. The middleware never waits on the pool itself;
// see WithShedding and WithAfterResponse for the options. The returned
// function and the handlers it makes are safe for concurrent use.
//
// Middleware panics, at construction, if p or an option is nil; the returned
// function panics if given a nil handler.
func Middleware(p *Pool, opts ...MiddlewareOption) func(http.Handler) http.Handler {
	if p == nil {
		panic("bgpool: Middleware: nil pool")
	}
	var o middlewareOptions
	for i, opt := range opts {
		if opt == nil {
			panic(fmt.Sprintf("bgpool: Middleware: option %d is nil", i))
		}
		opt.apply(&o)
	}
	return func(next http.Handler) http.Handler {
		if next == nil {
			panic("bgpool: Middleware: nil handler")
		}
		return &middleware{pool: p, opts: o, next: next, shared: &requestState{pool: p}}
	}
}

type middleware struct {
	pool   *Pool
	opts   middlewareOptions
	next   http.Handler
	shared *requestState // every request's state without WithAfterResponse
}

func (m *middleware) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	m.pool.handlers.enter()
	defer m.pool.handlers.leave()
	if m.opts.shed && m.pool.saturated() {
		m.pool.countShed()
		h := w.Header()
		h.Set("Retry-After", m.opts.retryAfter)
		http.Error(w, "503 service unavailable: too busy, retry later", http.StatusServiceUnavailable)
		return
	}
	if !m.opts.afterResponse {
		m.next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), requestKey{}, m.shared)))
		return
	}

	st := &requestState{pool: m.pool, kept: &keptTasks{}}
	returned := false
	defer func() {
		if !returned { // the handler panicked or called runtime.Goexit
			m.pool.countDiscarded(st.kept.close())
		}
	}()
	m.next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), requestKey{}, st)))
	returned = true
	m.pool.submitKept(st.kept)
}

// handlers counts the requests that are in a handler behind Middleware,
// hijacked connections included, so that Serve can wait for them before it
// shuts the pool down: their tasks must still be admitted.
type handlers struct {
	n    atomic.Int64
	mu   sync.Mutex
	idle chan struct{} // made by wait, closed when n comes down to zero
}

func (h *handlers) enter() { h.n.Add(1) }

func (h *handlers) leave() {
	if h.n.Add(-1) != 0 {
		return
	}
	h.mu.Lock()
	if h.idle != nil {
		close(h.idle)
		h.idle = nil
	}
	h.mu.Unlock()
}

// wait blocks until no request is in a handler, or ctx ends.
func (h *handlers) wait(ctx context.Context) error {
	for {
		h.mu.Lock()
		if h.n.Load() == 0 {
			h.mu.Unlock()
			return nil
		}
		if h.idle == nil {
			h.idle = make(chan struct{})
		}
		idle := h.idle
		h.mu.Unlock()
		select {
		case <-idle: // the last one left; look again, as another may have come
		case <-ctx.Done():
			return fmt.Errorf("%d handlers behind Middleware (on hijacked connections, say) did not return in time: %w", h.n.Load(), ctx.Err())
		}
	}
}

// close marks the handler as returned and hands back the kept tasks.
func (k *keptTasks) close() []item {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.returned = true
	tasks := k.tasks
	k.tasks = nil
	return tasks
}

// submitKept submits the tasks a handler kept, without waiting for room (see
// WithAfterResponse), and reports the ones the pool did not admit to the
// error handler. Each goes with a context that has already ended, so that
// Block and BlockFor give up at once, as if the submitter's context had.
func (p *Pool) submitKept(k *keptTasks) {
	kept := k.close()
	for i, it := range kept {
		// A context with the request's values that is already done, so that a
		// Block policy admits the task only if there is room now.
		ctx := doneContext(it.ctx)
		err := p.submit(ctx, it.run, keptFast)
		if err == errKept { // no room: the policy decides, off the handler's goroutine
			go p.overflowKept(ctx, kept[i:])
			return
		}
		if err != nil {
			p.keptRefused(it, err)
		}
	}
}

// overflowKept hands kept tasks to the policy, in order: the first was
// counted Submitted by submitKept already, the others are submitted now.
func (p *Pool) overflowKept(ctx context.Context, kept []item) {
	first := kept[0]
	it := item{ctx: ctx, run: first.run}
	if s := p.tag(&it); s != nil {
		s.at = p.now()
	}
	if err := p.overflow(ctx, it, applyPolicy); err != nil {
		p.keptRefused(first, err)
	}
	for _, it := range kept[1:] {
		if err := p.submit(doneContext(it.ctx), it.run, applyPolicy); err != nil {
			p.keptRefused(it, err)
		}
	}
}

func (p *Pool) keptRefused(it item, err error) {
	p.handleError(it.ctx, fmt.Errorf("bgpool: task kept for after the response was not admitted: %w", err))
}

// doneContext returns a context with ctx's values that has already ended.
func doneContext(ctx context.Context) context.Context {
	ctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	cancel()
	return ctx
}

// FromContext returns the pool that Middleware attached to ctx, or false if
// there is none. It works with a request's context and with the context of a
// task submitted through Go, which carries the request's values. It does not
// block and is safe for concurrent use.
func FromContext(ctx context.Context) (*Pool, bool) {
	if ctx == nil {
		return nil, false
	}
	st, ok := ctx.Value(requestKey{}).(*requestState)
	if !ok {
		return nil, false
	}
	return st.pool, true
}

// Go submits task to the pool that Middleware attached to r's context. The
// task's context carries r's context values but not its cancellation: it
// keeps running after the response has been written and the client has
// gone, and is cancelled only by the pool (WithTaskTimeout, or Shutdown's
// deadline).
//
// By default Go is Submit with r.Context(): it returns at once when a worker
// is free or the queue has room; otherwise the pool's policy decides, and
// under Block, Go waits for room until the request's context ends (the
// client went away, or the server's handler timeout passed), then returns an
// error matching ErrOverloaded and the context's error. To answer 503 in
// that case:
//
//	if err := bgpool.Go(r, task); errors.Is(err, bgpool.ErrOverloaded) {
//		w.Header().Set("Retry-After", "1")
//		http.Error(w, "too busy, retry later", http.StatusServiceUnavailable)
//		return
//	}
//
// With WithAfterResponse, Go only keeps the task, returns nil, and the
// middleware submits it once the handler has returned.
//
// Go returns ErrNoPool when r did not pass through Middleware, and an error
// for a nil r or task. It is safe for concurrent use, also from goroutines
// the handler starts.
func Go(r *http.Request, task Task) error {
	if r == nil {
		return errors.New("bgpool: Go: nil request")
	}
	return goRunner(r, runnerOf(task))
}

// goRunner is Go for any runner (a Job's too).
func goRunner(r *http.Request, run runner) error {
	ctx := r.Context()
	st, ok := ctx.Value(requestKey{}).(*requestState)
	if !ok {
		return ErrNoPool
	}
	if st.kept != nil && run != nil {
		k := st.kept
		k.mu.Lock()
		if !k.returned {
			k.tasks = append(k.tasks, item{ctx: ctx, run: run})
			k.mu.Unlock()
			return nil
		}
		k.mu.Unlock()
	}
	return st.pool.submit(ctx, run, applyPolicy)
}

// StatsHandler returns a handler that answers GET and HEAD requests with
// p.Stats() as JSON (the field names of Stats as keys), and other methods
// with 405 Method Not Allowed. It takes one brief lock per request, never
// waits on the pool, and is safe for concurrent use. It panics, at
// construction, if p is nil.
func StatsHandler(p *Pool) http.Handler {
	if p == nil {
		panic("bgpool: StatsHandler: nil pool")
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "405 method not allowed", http.StatusMethodNotAllowed)
			return
		}
		body, err := json.Marshal(p.Stats())
		if err != nil { // Stats holds only numbers; this cannot happen
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		h := w.Header()
		h.Set("Content-Type", "application/json")
		h.Set("Cache-Control", "no-store")
		h.Set("Content-Length", strconv.Itoa(len(body)+1))
		if r.Method == http.MethodGet {
			_, _ = w.Write(append(body, '\n'))
		}
	})
}
