package bgpool_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log"
	"math"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/bgpool/bgpool"
)

// The root package's TestMain (goleak) is in pool_test.go.

// httpServer starts an httptest server for h, closed when the test ends. Its
// error log goes to t.Log.
func httpServer(t *testing.T, h http.Handler) *httptest.Server {
	t.Helper()
	srv := httptest.NewUnstartedServer(h)
	srv.Config.ErrorLog = log.New(testWriter{t}, "", 0)
	srv.Start()
	t.Cleanup(srv.Close)
	return srv
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(b)))
	return len(b), nil
}

// get sends a GET request and returns the response with its body read.
func get(t *testing.T, url string) (*http.Response, string) {
	t.Helper()
	resp, err := http.Get(url)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp, string(body)
}

// wait receives from ch, failing the test after 10 seconds.
func wait[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(10 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
		panic("unreachable")
	}
}

type ctxKey struct{ name string }

var traceKey = &ctxKey{"trace"}

// withTrace is an outer middleware that puts a value in the request context.
func withTrace(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), traceKey, "trace-42")))
	})
}

func TestMiddlewareRejectsBadInputAtConstruction(t *testing.T) {
	p := newPool(t, 1, quietLogger())
	assert.PanicsWithValue(t, "bgpool: Middleware: nil pool", func() { bgpool.Middleware(nil) })
	assert.PanicsWithValue(t, "bgpool: Middleware: option 1 is nil", func() {
		bgpool.Middleware(p, bgpool.WithAfterResponse(), nil)
	})
	assert.PanicsWithValue(t, "bgpool: Middleware: nil handler", func() { bgpool.Middleware(p)(nil) })
	assert.PanicsWithValue(t, "bgpool: StatsHandler: nil pool", func() { bgpool.StatsHandler(nil) })
}

func TestGoWithoutTheMiddlewareReturnsErrNoPool(t *testing.T) {
	errs := make(chan error, 2)
	srv := httpServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		errs <- bgpool.Go(r, func(context.Context) error { return nil })
		_, ok := bgpool.FromContext(r.Context())
		assert.False(t, ok)
	}))
	get(t, srv.URL)
	assert.ErrorIs(t, wait(t, errs, "Go"), bgpool.ErrNoPool)

	err := bgpool.Go(nil, func(context.Context) error { return nil })
	require.Error(t, err)
	assert.Contains(t, err.Error(), "bgpool: Go: nil request")

	//lint:ignore SA1012 a nil context is the bad input under test
	_, ok := bgpool.FromContext(nil) //nolint:staticcheck
	assert.False(t, ok)
}

func TestGoNeverDelaysTheResponse(t *testing.T) {
	for _, after := range []bool{false, true} {
		name := "submits while the handler runs"
		var opts []bgpool.MiddlewareOption
		if after {
			name = "submits after the handler with WithAfterResponse"
			opts = append(opts, bgpool.WithAfterResponse())
		}
		t.Run(name, func(t *testing.T) {
			p := newPool(t, 2, quietLogger())
			started := make(chan struct{})
			release := make(chan struct{})
			type seen struct {
				value   any
				pool    bool
				errLate error
			}
			saw := make(chan seen, 1)
			task := func(ctx context.Context) error {
				close(started)
				<-release // a task that takes as long as the test wants
				_, ok := bgpool.FromContext(ctx)
				saw <- seen{value: ctx.Value(traceKey), pool: ok, errLate: ctx.Err()}
				return nil
			}
			h := withTrace(bgpool.Middleware(p, opts...)(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				assert.NoError(t, bgpool.Go(r, task))
				w.WriteHeader(http.StatusAccepted)
			})))
			srv := httpServer(t, h)

			resp, _ := get(t, srv.URL)
			assert.Equal(t, http.StatusAccepted, resp.StatusCode)
			wait(t, started, "the task to start")
			// The response is in and the client goes away while the task runs.
			srv.CloseClientConnections()
			http.DefaultClient.CloseIdleConnections()

			close(release)
			got := wait(t, saw, "the task to finish")
			assert.Equal(t, "trace-42", got.value, "the task sees the request's values")
			assert.True(t, got.pool, "FromContext works in the task")
			assert.NoError(t, got.errLate, "the task is not cancelled by the end of the request")
		})
	}
}

func TestTaskIsCancelledOnlyByThePool(t *testing.T) {
	tests := []struct {
		name   string
		opts   []bgpool.Option
		cancel func(t *testing.T, p *bgpool.Pool)
	}{
		{
			name:   "by the task timeout",
			opts:   []bgpool.Option{bgpool.WithTaskTimeout(50 * time.Millisecond)},
			cancel: func(*testing.T, *bgpool.Pool) {},
		},
		{
			name: "by the shutdown deadline",
			cancel: func(t *testing.T, p *bgpool.Pool) {
				ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
				defer cancel()
				err := p.Shutdown(ctx)
				assert.ErrorIs(t, err, context.DeadlineExceeded)
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := newPool(t, 1, append([]bgpool.Option{quietLogger()}, tt.opts...)...)
			ended := make(chan error, 1)
			h := bgpool.Middleware(p)(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				assert.NoError(t, bgpool.Go(r, func(ctx context.Context) error {
					<-ctx.Done()
					ended <- ctx.Err()
					return ctx.Err()
				}))
			}))
			srv := httpServer(t, h)
			resp, _ := get(t, srv.URL)
			assert.Equal(t, http.StatusOK, resp.StatusCode)
			srv.CloseClientConnections()

			tt.cancel(t, p)
			err := wait(t, ended, "the task to be cancelled")
			assert.Error(t, err)
		})
	}
}

func TestGoUnderBlockWaitsOnlyWhileTheQueueIsFull(t *testing.T) {
	t.Run("waits until a worker frees up", func(t *testing.T) {
		p := newPool(t, 1, quietLogger(), bgpool.WithQueueSize(0))
		release := occupy(t, p, 1)
		entered := make(chan struct{})
		returned := make(chan error, 1)
		ran := make(chan struct{})
		h := bgpool.Middleware(p)(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			close(entered)
			returned <- bgpool.Go(r, func(context.Context) error { close(ran); return nil })
		}))
		srv := httpServer(t, h)
		resp := make(chan int, 1)
		go func() {
			r, err := http.Get(srv.URL)
			if err != nil {
				resp <- 0
				return
			}
			r.Body.Close()
			resp <- r.StatusCode
		}()

		wait(t, entered, "the handler")
		select {
		case err := <-returned:
			t.Fatalf("Go returned %v while no worker was free", err)
		case <-time.After(50 * time.Millisecond): // still waiting, as it should
		}
		release()
		assert.NoError(t, wait(t, returned, "Go"))
		assert.Equal(t, http.StatusOK, wait(t, resp, "the response"))
		wait(t, ran, "the task")
	})

	t.Run("gives up when the request's context ends", func(t *testing.T) {
		p := newPool(t, 1, quietLogger(), bgpool.WithQueueSize(0))
		occupy(t, p, 1)
		entered := make(chan struct{})
		returned := make(chan error, 1)
		h := bgpool.Middleware(p)(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			close(entered)
			returned <- bgpool.Go(r, func(context.Context) error { return nil })
		}))
		srv := httpServer(t, h)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL, nil)
		require.NoError(t, err)
		clientErr := make(chan error, 1)
		go func() {
			resp, err := http.DefaultClient.Do(req)
			if err == nil {
				resp.Body.Close()
			}
			clientErr <- err
		}()

		wait(t, entered, "the handler")
		cancel() // the client goes away
		err = wait(t, returned, "Go")
		assert.ErrorIs(t, err, bgpool.ErrOverloaded)
		assert.ErrorIs(t, err, context.Canceled)
		assert.Error(t, wait(t, clientErr, "the client"))
		s := p.Stats()
		assert.Equal(t, uint64(2), s.Submitted)
		assert.Equal(t, uint64(1), s.Rejected)
	})
}

func TestWithAfterResponseStartsTasksOnlyAfterTheHandlerReturns(t *testing.T) {
	p := newPool(t, 1, quietLogger())
	var mu sync.Mutex
	var events []string
	record := func(e string) {
		mu.Lock()
		events = append(events, e)
		mu.Unlock()
	}
	done := make(chan struct{})
	h := withTrace(bgpool.Middleware(p, bgpool.WithAfterResponse())(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for _, name := range []string{"task 1", "task 2"} {
			assert.NoError(t, bgpool.Go(r, func(ctx context.Context) error {
				record(name + " sees " + ctx.Value(traceKey).(string))
				if name == "task 2" {
					close(done)
				}
				return nil
			}))
		}
		assert.Equal(t, uint64(0), p.Stats().Submitted, "nothing is handed to the pool during the handler")
		record("handler returns")
	})))
	srv := httpServer(t, h)

	resp, _ := get(t, srv.URL)
	assert.Equal(t, http.StatusOK, resp.StatusCode)
	wait(t, done, "the tasks")
	mu.Lock()
	defer mu.Unlock()
	assert.Equal(t, []string{"handler returns", "task 1 sees trace-42", "task 2 sees trace-42"}, events)
}

// chanWriter sends each write to a channel, so that the test can read the
// server's log without a data race.
type chanWriter chan string

func (c chanWriter) Write(b []byte) (int, error) {
	c <- string(b)
	return len(b), nil
}

func TestWithAfterResponseDiscardsTasksWhenTheHandlerPanics(t *testing.T) {
	boom := errors.New("boom")
	tests := []struct {
		name      string
		value     any
		recoverer bool // an outer middleware recovers the panic
	}{
		{"an outer recoverer sees the original value", boom, true},
		{"an outer recoverer sees http.ErrAbortHandler untouched", http.ErrAbortHandler, true},
		{"the server sees the panic with the handler's stack", boom, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := newPool(t, 1, quietLogger(), bgpool.WithQueueSize(0))
			ran := make(chan struct{}, 2)
			var h http.Handler = bgpool.Middleware(p, bgpool.WithAfterResponse())(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				for range 2 {
					assert.NoError(t, bgpool.Go(r, func(context.Context) error { ran <- struct{}{}; return nil }))
				}
				panic(tt.value)
			}))
			recovered := make(chan any, 1)
			if tt.recoverer {
				inner := h
				h = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					defer func() {
						v := recover()
						recovered <- v
						if v == http.ErrAbortHandler {
							panic(v)
						}
						w.WriteHeader(http.StatusInternalServerError)
					}()
					inner.ServeHTTP(w, r)
				})
			}
			logs := make(chanWriter, 10)
			srv := httptest.NewUnstartedServer(h)
			srv.Config.ErrorLog = log.New(logs, "", 0)
			srv.Start()
			t.Cleanup(srv.Close)

			resp, err := http.Get(srv.URL)
			if err == nil {
				resp.Body.Close()
			}
			if tt.recoverer {
				got := wait(t, recovered, "the recoverer")
				assert.True(t, got == tt.value, "recovered %v, want %v", got, tt.value)
				if tt.value != http.ErrAbortHandler {
					require.NoError(t, err)
					assert.Equal(t, http.StatusInternalServerError, resp.StatusCode)
				}
			} else {
				assert.Error(t, err, "the server aborts the connection")
				line := wait(t, logs, "the server's log")
				assert.Contains(t, line, "panic serving")
				assert.Contains(t, line, "boom")
				assert.Contains(t, line, "TestWithAfterResponseDiscardsTasksWhenTheHandlerPanics", "the stack is the handler's")
			}

			s := p.Stats()
			assert.Equal(t, uint64(2), s.Submitted)
			assert.Equal(t, uint64(2), s.Dropped)
			// Nothing leaked: the pool's only worker is free.
			done := make(chan struct{})
			require.NoError(t, p.TrySubmit(context.Background(), func(context.Context) error { close(done); return nil }))
			wait(t, done, "a task after the panic")
			select {
			case <-ran:
				t.Error("a discarded task ran")
			default:
			}
		})
	}
}

func TestWithAfterResponseReportsTasksThePoolDidNotAdmit(t *testing.T) {
	tests := []struct {
		name    string
		policy  bgpool.Policy
		closed  bool
		wantErr error // nil: no error reported
		check   func(t *testing.T, s bgpool.Stats)
	}{
		{
			name:    "Block gives up at once and the task is rejected",
			policy:  bgpool.Block,
			wantErr: bgpool.ErrOverloaded,
			check:   func(t *testing.T, s bgpool.Stats) { assert.Equal(t, uint64(1), s.Rejected) },
		},
		{
			name:   "Drop drops the task",
			policy: bgpool.Drop,
			check:  func(t *testing.T, s bgpool.Stats) { assert.Equal(t, uint64(1), s.Dropped) },
		},
		{
			name:    "a closed pool rejects the task",
			policy:  bgpool.Block,
			closed:  true,
			wantErr: bgpool.ErrClosed,
			check:   func(t *testing.T, s bgpool.Stats) { assert.Equal(t, uint64(1), s.Rejected) },
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			reported := make(chan error, 1)
			p := newPool(t, 1, quietLogger(), bgpool.WithQueueSize(0), bgpool.WithPolicy(tt.policy),
				bgpool.WithErrorHandler(func(ctx context.Context, err error) {
					assert.Equal(t, "trace-42", ctx.Value(traceKey))
					reported <- err
				}))
			if tt.closed {
				require.NoError(t, p.Shutdown(context.Background()))
			} else {
				occupy(t, p, 1)
			}
			returned := make(chan struct{})
			h := withTrace(bgpool.Middleware(p, bgpool.WithAfterResponse())(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				assert.NoError(t, bgpool.Go(r, func(context.Context) error { return nil }))
			})))
			srv := httpServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				h.ServeHTTP(w, r)
				close(returned)
			}))

			resp, _ := get(t, srv.URL)
			assert.Equal(t, http.StatusOK, resp.StatusCode)
			wait(t, returned, "the middleware to return")
			if tt.wantErr != nil {
				assert.ErrorIs(t, wait(t, reported, "the error handler"), tt.wantErr)
			} else {
				select {
				case err := <-reported:
					t.Errorf("unexpected report: %v", err)
				default:
				}
			}
			// A kept task that found no room is settled off the handler's
			// goroutine: wait for it.
			tt.check(t, waitStats(t, p, func(s bgpool.Stats) bool { return s.Waiting == 0 }))
		})
	}
}

func TestWithSheddingAnswers503WhileThePoolCannotAdmit(t *testing.T) {
	tests := []struct {
		name       string
		state      func(t *testing.T, p *bgpool.Pool)
		wantStatus int
	}{
		{"calls the handler while a worker is free", func(*testing.T, *bgpool.Pool) {}, http.StatusOK},
		{"calls the handler while the queue has room", func(t *testing.T, p *bgpool.Pool) {
			occupy(t, p, 1)
			require.NoError(t, p.Submit(context.Background(), func(context.Context) error { return nil }))
			// one slot of two queued
		}, http.StatusOK},
		{"answers 503 when no worker is idle and the queue is full", func(t *testing.T, p *bgpool.Pool) {
			occupy(t, p, 1)
			for range 2 {
				require.NoError(t, p.Submit(context.Background(), func(context.Context) error { return nil }))
			}
		}, http.StatusServiceUnavailable},
		{"answers 503 once the pool is closed", func(t *testing.T, p *bgpool.Pool) {
			require.NoError(t, p.Shutdown(context.Background()))
		}, http.StatusServiceUnavailable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := newPool(t, 1, quietLogger(), bgpool.WithQueueSize(2))
			tt.state(t, p)
			called := make(chan struct{}, 1)
			h := bgpool.Middleware(p, bgpool.WithShedding(2*time.Second))(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				called <- struct{}{}
				_, _ = io.WriteString(w, "handled")
			}))
			srv := httpServer(t, h)

			resp, body := get(t, srv.URL)
			assert.Equal(t, tt.wantStatus, resp.StatusCode)
			if tt.wantStatus == http.StatusOK {
				assert.Equal(t, "handled", body)
				assert.Len(t, called, 1)
				assert.Zero(t, p.Stats().Shed)
				return
			}
			assert.Empty(t, called, "the handler is not called")
			assert.Equal(t, uint64(1), p.Stats().Shed, "the shed request is counted")
			assert.Equal(t, "2", resp.Header.Get("Retry-After"))
			assert.Equal(t, "text/plain; charset=utf-8", resp.Header.Get("Content-Type"))
			assert.NotEmpty(t, body)
			assert.Less(t, len(body), 100)
		})
	}
}

func TestWithSheddingRetryAfterIsWholeSecondsAtLeastOne(t *testing.T) {
	tests := []struct {
		name       string
		retryAfter time.Duration
		want       string
	}{
		{"zero becomes one second", 0, "1"},
		{"a negative duration becomes one second", -time.Minute, "1"},
		{"a fraction of a second rounds up to one", time.Millisecond, "1"},
		{"one second stays one", time.Second, "1"},
		{"one and a half seconds round up to two", 1500 * time.Millisecond, "2"},
		{"a minute is sixty", time.Minute, "60"},
	}
	p := newPool(t, 1, quietLogger())
	require.NoError(t, p.Shutdown(context.Background())) // always saturated
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := bgpool.Middleware(p, bgpool.WithShedding(tt.retryAfter))(http.NotFoundHandler())
			srv := httpServer(t, h)
			resp, _ := get(t, srv.URL)
			assert.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)
			assert.Equal(t, tt.want, resp.Header.Get("Retry-After"))
		})
	}
}

func TestStatsHandler(t *testing.T) {
	p := newPool(t, 3, quietLogger(), bgpool.WithQueueSize(7))
	done := make(chan struct{})
	require.NoError(t, p.Submit(context.Background(), func(context.Context) error { close(done); return nil }))
	<-done
	srv := httpServer(t, bgpool.StatsHandler(p))

	t.Run("GET answers the stats as JSON", func(t *testing.T) {
		resp, body := get(t, srv.URL)
		assert.Equal(t, http.StatusOK, resp.StatusCode)
		assert.Equal(t, "application/json", resp.Header.Get("Content-Type"))
		var s bgpool.Stats
		require.NoError(t, json.Unmarshal([]byte(body), &s))
		assert.Equal(t, 3, s.Workers)
		assert.Equal(t, 7, s.QueueSize)
		assert.Equal(t, uint64(1), s.Submitted)
	})
	t.Run("POST is not allowed", func(t *testing.T) {
		resp, err := http.Post(srv.URL, "text/plain", strings.NewReader("x"))
		require.NoError(t, err)
		resp.Body.Close()
		assert.Equal(t, http.StatusMethodNotAllowed, resp.StatusCode)
		assert.Equal(t, "GET, HEAD", resp.Header.Get("Allow"))
	})
}

func TestWithAfterResponseNeverHoldsTheResponseForTheOverflow(t *testing.T) {
	// Spill with a store that does not answer: the kept Jobs the pool
	// cannot admit go to the hand-off off the handler's goroutine.
	s := &store{perCall: time.Second} // far longer than a response
	p := newPool(t, 1, quietLogger(), bgpool.WithQueueSize(0), bgpool.WithPolicy(bgpool.Spill), bgpool.WithHandoff(s))
	release := occupy(t, p, 1)
	defer release()
	job := bgpool.NewJob(func(context.Context, mailArgs) error { return nil })
	var goErrs atomic.Int64
	h := bgpool.Middleware(p, bgpool.WithAfterResponse())(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for range 3 {
			if job.Go(r, mailArgs{}) != nil {
				goErrs.Add(1)
			}
		}
		w.WriteHeader(http.StatusAccepted)
	}))
	srv := httpServer(t, h)
	start := time.Now()
	resp, body := get(t, srv.URL)
	assert.Equal(t, http.StatusAccepted, resp.StatusCode, body)
	assert.Less(t, time.Since(start), time.Second, "the response is not held by the hand-off")
	assert.Zero(t, goErrs.Load(), "Go keeps the Jobs")
	waitStats(t, p, func(s bgpool.Stats) bool { return s.Waiting >= 1 })
}

func TestWithAfterResponseReportsTheTasksOfAPanickingHandler(t *testing.T) {
	var reported atomic.Int64
	p := newPool(t, 1, quietLogger(), bgpool.WithErrorHandler(func(_ context.Context, err error) {
		if strings.Contains(err.Error(), "handler panicked") {
			reported.Add(1)
		}
	}))
	job := bgpool.NewJob(func(context.Context, mailArgs) error { return nil })
	h := bgpool.Middleware(p, bgpool.WithAfterResponse())(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = job.Go(r, mailArgs{})
		_ = job.Go(r, mailArgs{})
		panic(http.ErrAbortHandler) // as httputil.ReverseProxy does
	}))
	srv := httpServer(t, h)
	_, err := http.Get(srv.URL)
	require.Error(t, err, "the aborted handler closes the connection")
	waitStats(t, p, func(s bgpool.Stats) bool { return s.Dropped == 2 })
	assert.Equal(t, int64(2), reported.Load(), "each discarded Job reaches the error handler")
}

func TestWithSheddingSaturatesAHugeRetryAfter(t *testing.T) {
	p := newPool(t, 1, quietLogger(), bgpool.WithQueueSize(0), bgpool.WithPolicy(bgpool.Reject))
	release := occupy(t, p, 1)
	defer release()
	h := bgpool.Middleware(p, bgpool.WithShedding(math.MaxInt64))(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	srv := httpServer(t, h)
	resp, _ := get(t, srv.URL)
	assert.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)
	assert.Equal(t, strconv.FormatInt(math.MaxInt64/int64(time.Second)+1, 10), resp.Header.Get("Retry-After"))
}
