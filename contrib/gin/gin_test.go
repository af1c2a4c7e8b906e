package bggin_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/bgpool/bgpool"
	bggin "github.com/bgpool/bgpool/contrib/gin"
)

func TestMain(m *testing.M) {
	gin.SetMode(gin.TestMode)
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
			r := gin.New()
			r.Use(func(c *gin.Context) { // an outer middleware with a request value
				c.Request = c.Request.WithContext(context.WithValue(c.Request.Context(), ctxKey{}, "v"))
				c.Next()
			})
			r.Use(bggin.Middleware(p, opts...))
			r.GET("/", func(c *gin.Context) {
				_, ok := bgpool.FromContext(c.Request.Context())
				assert.True(t, ok)
				assert.NoError(t, bggin.Go(c, func(ctx context.Context) error {
					<-release
					seen <- ctx.Value(ctxKey{})
					return ctx.Err()
				}))
				c.String(http.StatusAccepted, "accepted")
			})
			srv := httptest.NewServer(r)
			t.Cleanup(srv.Close)

			resp, body := get(t, srv.URL)
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
	r := gin.New()
	r.Use(bggin.Middleware(p, bgpool.WithShedding(3*time.Second)))
	r.GET("/", func(c *gin.Context) { called = true })
	srv := httptest.NewServer(r)
	t.Cleanup(srv.Close)

	resp, body := get(t, srv.URL)
	assert.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)
	assert.Equal(t, "3", resp.Header.Get("Retry-After"))
	assert.NotEmpty(t, body)
	assert.False(t, called)
}

func TestMiddlewareDiscardsKeptTasksWhenTheHandlerPanics(t *testing.T) {
	p := newPool(t, 1)
	r := gin.New()
	r.Use(gin.CustomRecoveryWithWriter(io.Discard, func(c *gin.Context, _ any) {
		c.AbortWithStatus(http.StatusInternalServerError)
	}))
	r.Use(bggin.Middleware(p, bgpool.WithAfterResponse()))
	r.GET("/", func(c *gin.Context) {
		assert.NoError(t, bggin.Go(c, func(context.Context) error { return nil }))
		panic(errors.New("boom"))
	})
	srv := httptest.NewServer(r)
	t.Cleanup(srv.Close)

	resp, _ := get(t, srv.URL)
	assert.Equal(t, http.StatusInternalServerError, resp.StatusCode)
	s := p.Stats()
	assert.Equal(t, uint64(1), s.Submitted)
	assert.Equal(t, uint64(1), s.Dropped)
}

func TestGoWithoutTheMiddlewareReturnsErrNoPool(t *testing.T) {
	errs := make(chan error, 1)
	r := gin.New()
	r.GET("/", func(c *gin.Context) { errs <- bggin.Go(c, func(context.Context) error { return nil }) })
	srv := httptest.NewServer(r)
	t.Cleanup(srv.Close)
	get(t, srv.URL)
	assert.ErrorIs(t, <-errs, bgpool.ErrNoPool)
	assert.Error(t, bggin.Go(nil, func(context.Context) error { return nil }))
}
