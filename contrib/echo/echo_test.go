package bgecho_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/bgpool/bgpool"
	bgecho "github.com/bgpool/bgpool/contrib/echo"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreCurrent())
}

func newPool(t *testing.T, size int, opts ...bgpool.Option) *bgpool.Pool {
	t.Helper()
	p, err := bgpool.New(size, opts...)
	require.NoError(t, err)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = p.Shutdown(ctx)
	})
	return p
}

func newEcho(t *testing.T) (*echo.Echo, func() string) {
	t.Helper()
	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	e.Logger.SetOutput(io.Discard)
	var srv *httptest.Server
	t.Cleanup(func() {
		if srv != nil {
			srv.Close()
		}
	})
	return e, func() string {
		srv = httptest.NewServer(e)
		return srv.URL
	}
}

func get(t *testing.T, url string) (*http.Response, string) {
	t.Helper()
	resp, err := http.Get(url)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp, string(body)
}

type ctxKey struct{}

func TestMiddlewareRunsTasksAfterAnImmediateResponse(t *testing.T) {
	for _, opts := range [][]bgpool.MiddlewareOption{nil, {bgpool.WithAfterResponse()}} {
		name := "submits while the handler runs"
		if opts != nil {
			name = "submits after the handler with WithAfterResponse"
		}
		t.Run(name, func(t *testing.T) {
			p := newPool(t, 1)
			release := make(chan struct{})
			seen := make(chan any, 1)
			e, start := newEcho(t)
			e.Use(func(next echo.HandlerFunc) echo.HandlerFunc { // an outer middleware with a request value
				return func(c echo.Context) error {
					c.SetRequest(c.Request().WithContext(context.WithValue(c.Request().Context(), ctxKey{}, "v")))
					return next(c)
				}
			})
			e.Use(bgecho.Middleware(p, opts...))
			e.GET("/", func(c echo.Context) error {
				_, ok := bgpool.FromContext(c.Request().Context())
				assert.True(t, ok)
				assert.NoError(t, bgecho.Go(c, func(ctx context.Context) error {
					<-release
					seen <- ctx.Value(ctxKey{})
					return ctx.Err()
				}))
				return c.String(http.StatusAccepted, "accepted")
			})
			url := start()

			resp, body := get(t, url)
			assert.Equal(t, http.StatusAccepted, resp.StatusCode)
			assert.Equal(t, "accepted", body)
			close(release) // the task was still running when the response came
			select {
			case v := <-seen:
				assert.Equal(t, "v", v)
			case <-time.After(10 * time.Second):
				t.Fatal("the task did not run")
			}
		})
	}
}

func TestMiddlewareShedsWithoutCallingTheHandler(t *testing.T) {
	p := newPool(t, 1)
	require.NoError(t, p.Shutdown(context.Background()))
	called := false
	e, start := newEcho(t)
	e.Use(bgecho.Middleware(p, bgpool.WithShedding(3*time.Second)))
	e.GET("/", func(c echo.Context) error { called = true; return nil })
	url := start()

	resp, body := get(t, url)
	assert.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)
	assert.Equal(t, "3", resp.Header.Get("Retry-After"))
	assert.NotEmpty(t, body)
	assert.False(t, called)
}

func TestMiddlewareHandlerErrorsAndPanics(t *testing.T) {
	t.Run("a returned error still submits kept tasks and reaches Echo", func(t *testing.T) {
		p := newPool(t, 1)
		ran := make(chan struct{})
		e, start := newEcho(t)
		e.Use(bgecho.Middleware(p, bgpool.WithAfterResponse()))
		e.GET("/", func(c echo.Context) error {
			assert.NoError(t, bgecho.Go(c, func(context.Context) error { close(ran); return nil }))
			return echo.NewHTTPError(http.StatusTeapot, "short and stout")
		})
		url := start()
		resp, _ := get(t, url)
		assert.Equal(t, http.StatusTeapot, resp.StatusCode)
		select {
		case <-ran:
		case <-time.After(10 * time.Second):
			t.Fatal("the kept task did not run")
		}
	})

	t.Run("a panic discards kept tasks and reaches Recover", func(t *testing.T) {
		p := newPool(t, 1)
		e, start := newEcho(t)
		e.Use(middleware.RecoverWithConfig(middleware.RecoverConfig{DisablePrintStack: true}))
		e.Use(bgecho.Middleware(p, bgpool.WithAfterResponse()))
		e.GET("/", func(c echo.Context) error {
			assert.NoError(t, bgecho.Go(c, func(context.Context) error { return nil }))
			panic(errors.New("boom"))
		})
		url := start()
		resp, _ := get(t, url)
		assert.Equal(t, http.StatusInternalServerError, resp.StatusCode)
		s := p.Stats()
		assert.Equal(t, uint64(1), s.Submitted)
		assert.Equal(t, uint64(1), s.Dropped)
	})
}

func TestGoWithoutTheMiddlewareReturnsErrNoPool(t *testing.T) {
	errs := make(chan error, 1)
	e, start := newEcho(t)
	e.GET("/", func(c echo.Context) error {
		errs <- bgecho.Go(c, func(context.Context) error { return nil })
		return nil
	})
	url := start()
	get(t, url)
	assert.ErrorIs(t, <-errs, bgpool.ErrNoPool)
	assert.Error(t, bgecho.Go(nil, func(context.Context) error { return nil }))
}
