package bgpool

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync/atomic"
	"time"
)

// A ServeOption configures Serve and ListenAndServe. An invalid option makes
// them return an error before they serve anything.
type ServeOption interface {
	apply(*serveOptions) error
}

type serveOptionFunc func(*serveOptions) error

func (f serveOptionFunc) apply(o *serveOptions) error { return f(o) }

// serveOptions holds Serve's configuration; the zero value of every field is
// the default.
type serveOptions struct {
	delay time.Duration
	ready *Readiness
}

// WithShutdownDelay makes Serve wait d, once its ctx has ended, before it
// calls srv.Shutdown. Meanwhile the server keeps accepting and serving
// requests, and ready (if not nil) answers 503, so that a load balancer
// that still routes traffic to the process (Kubernetes does, for a few
// seconds after SIGTERM, until every node has seen the endpoint removed)
// takes it out of rotation without clients seeing refused connections.
//
// The delay is counted inside Serve's grace: it leaves grace - d for
// in-flight requests and the pool's drain. A negative d, or a d longer than
// grace, makes Serve return an error. The default is no delay; ready then
// still answers 503 from the moment ctx ends.
func WithShutdownDelay(d time.Duration, ready *Readiness) ServeOption {
	return serveOptionFunc(func(o *serveOptions) error {
		if d < 0 {
			return fmt.Errorf("bgpool: WithShutdownDelay(%v): delay must not be negative", d)
		}
		o.delay, o.ready = d, ready
		return nil
	})
}

// Readiness is an http.Handler for a readiness probe (Kubernetes'
// readinessProbe, a load balancer's health check). It answers 200 "ready"
// until the Serve it was given to with WithShutdownDelay sees its ctx end,
// and 503 "shutting down" from then on. The zero value is ready to use; a
// Readiness must not be copied after first use. It is safe for concurrent
// use and never blocks.
type Readiness struct {
	draining atomic.Bool
}

// ServeHTTP answers 200 while the server is serving and 503 once its
// shutdown has begun, with a short plain-text body.
func (rd *Readiness) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	if rd.draining.Load() {
		http.Error(w, "503 shutting down", http.StatusServiceUnavailable)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	_, _ = w.Write([]byte("ready\n"))
}

// Serve serves HTTP on ln with srv until ctx ends, then shuts down srv and p
// within one deadline, grace from the moment ctx ended:
//
//  1. ready (see WithShutdownDelay) starts answering 503; with a delay, srv
//     keeps serving for that long;
//  2. srv.Shutdown closes ln and waits for in-flight requests, which may
//     still submit tasks to p;
//  3. p.Shutdown lets queued and running tasks finish.
//
// If the deadline passes during step 2, Serve closes srv's connections
// (srv.Close) and still goes on to p.Shutdown, which then abandons the
// pool's tasks at once. If ln fails on its own (srv.Serve returns before ctx
// ends), Serve shuts p down the same way, from that moment.
//
// Serve blocks until all of that is over. It returns nil when ctx ended and
// everything finished in time. Otherwise it returns an error that says what
// was abandoned: in-flight connections, the number of tasks (matching
// context.DeadlineExceeded with errors.Is), or the listener's own error. An
// error from closing ln in step 2 is reported as such ("closing the
// listener"); it does not cut the shutdown short.
// Serve always closes ln and leaves p shut down, except when it returns an
// error for bad input (a nil ctx, srv, ln or p, a negative grace, or an
// invalid option), which it does at once, touching nothing but closing ln.
//
// Pass a ctx that ends on SIGTERM and SIGINT (signal.NotifyContext), and
// give srv a BaseContext that does not end with it, or in-flight requests
// are cancelled at the start of the shutdown: the default BaseContext,
// context.Background, is right. Do not drain p from srv.RegisterOnShutdown:
// those functions run on goroutines nobody waits for.
func Serve(ctx context.Context, srv *http.Server, ln net.Listener, p *Pool, grace time.Duration, opts ...ServeOption) error {
	o, err := serveArgs("Serve", ctx, srv, p, grace, opts)
	if err == nil && ln == nil {
		err = errors.New("bgpool: Serve: nil listener")
	}
	if err != nil {
		if ln != nil {
			_ = ln.Close()
		}
		return err
	}
	return serve(ctx, srv, ln, p, grace, o)
}

// ListenAndServe listens on the TCP address srv.Addr (":http" if empty) and
// then behaves like Serve. It serves plain HTTP; for TLS, wrap a listener
// with tls.NewListener and call Serve. If it cannot listen, it shuts p down within grace
// and returns the listen error (joined with p's, if any). It blocks like
// Serve, and returns the same errors.
func ListenAndServe(ctx context.Context, srv *http.Server, p *Pool, grace time.Duration, opts ...ServeOption) error {
	o, err := serveArgs("ListenAndServe", ctx, srv, p, grace, opts)
	if err != nil {
		return err
	}
	addr := srv.Addr
	if addr == "" {
		addr = ":http"
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), grace)
		defer cancel()
		return errors.Join(fmt.Errorf("bgpool: ListenAndServe: %w", err), p.Shutdown(sctx))
	}
	return serve(ctx, srv, ln, p, grace, o)
}

// serveArgs checks the arguments that Serve and ListenAndServe share, and
// applies the options.
func serveArgs(fn string, ctx context.Context, srv *http.Server, p *Pool, grace time.Duration, opts []ServeOption) (serveOptions, error) {
	var o serveOptions
	switch {
	case ctx == nil:
		return o, fmt.Errorf("bgpool: %s: nil context", fn)
	case srv == nil:
		return o, fmt.Errorf("bgpool: %s: nil server", fn)
	case p == nil:
		return o, fmt.Errorf("bgpool: %s: nil pool", fn)
	case grace < 0:
		return o, fmt.Errorf("bgpool: %s: grace %v must not be negative", fn, grace)
	}
	for i, opt := range opts {
		if opt == nil {
			return o, fmt.Errorf("bgpool: %s: option %d is nil", fn, i)
		}
		if err := opt.apply(&o); err != nil {
			return o, err
		}
	}
	if o.delay > grace {
		return o, fmt.Errorf("bgpool: %s: shutdown delay %v is longer than grace %v", fn, o.delay, grace)
	}
	return o, nil
}

func serve(ctx context.Context, srv *http.Server, ln net.Listener, p *Pool, grace time.Duration, o serveOptions) error {
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()

	var serveErr error
	serving := true
	select {
	case <-ctx.Done(): // asked to stop: SIGTERM, say
	case serveErr = <-served: // the listener failed on its own
		serving = false
	}
	deadline := time.Now().Add(grace)
	if o.ready != nil {
		o.ready.draining.Store(true)
	}
	// The deadline is the only thing that may cut the shutdown short; ctx's
	// values are kept for whatever srv's and p's hooks log.
	sctx, cancel := context.WithDeadline(context.WithoutCancel(ctx), deadline)
	defer cancel()

	if serving && o.delay > 0 {
		t := time.NewTimer(o.delay)
		select {
		case <-t.C: // the load balancer has had its time to stop routing here
		case serveErr = <-served: // the listener failed meanwhile
			serving = false
			t.Stop()
		}
	}

	var errs []error
	if serveErr != nil {
		errs = append(errs, fmt.Errorf("bgpool: serve: %w", serveErr))
	}
	// Shutdown also makes a Serve that has not started yet return at once.
	// It fails in one of two ways: sctx ended while requests were in flight,
	// or closing a listener failed (and it waited for the requests anyway).
	switch err := srv.Shutdown(sctx); {
	case err == nil: // every request finished in time
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		_ = srv.Close()
		errs = append(errs, fmt.Errorf("bgpool: serve: in-flight requests did not finish within grace %v; their connections were closed: %w", grace, err))
	default:
		errs = append(errs, fmt.Errorf("bgpool: serve: closing the listener: %w", err))
	}
	if serving {
		if err := <-served; !errors.Is(err, http.ErrServerClosed) {
			errs = append(errs, fmt.Errorf("bgpool: serve: %w", err))
		}
	}
	// srv.Shutdown does not wait for hijacked connections (a websocket,
	// say): their handlers may still submit tasks, so the pool stays open
	// until they have returned too, within the one deadline.
	if err := p.handlers.wait(sctx); err != nil {
		errs = append(errs, fmt.Errorf("bgpool: serve: %w", err))
	}
	if err := p.Shutdown(sctx); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}
