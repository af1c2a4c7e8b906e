// Package bgecho adapts bgpool's HTTP middleware to Echo (v4).
//
//	e := echo.New()
//	e.Use(middleware.Recover(), bgecho.Middleware(pool))
//	e.POST("/signup", func(c echo.Context) error {
//		if err := bgecho.Go(c, sendWelcomeMail); err != nil {
//			c.Response().Header().Set("Retry-After", "1")
//			return c.String(http.StatusServiceUnavailable, "too busy, retry later")
//		}
//		return c.NoContent(http.StatusAccepted)
//	})
//
// It lives in its own module, github.com/bgpool/bgpool/contrib/echo, so that
// bgpool itself does not depend on Echo. For the shutdown sequence, pass the
// *echo.Echo as the http.Server's Handler to bgpool.Serve or
// bgpool.ListenAndServe.
package bgecho

import (
	"net/http"

	"github.com/labstack/echo/v4"

	"github.com/bgpool/bgpool"
)

// Middleware returns Echo middleware that behaves like bgpool.Middleware
// with the same options: it attaches p to the context of c.Request(), so
// that the handlers after it can call Go (or bgpool.FromContext with
// c.Request().Context()). With bgpool.WithShedding it answers 503 itself
// and does not call next; with bgpool.WithAfterResponse it submits the tasks
// once next has returned, and discards them if next panics.
//
// An error that next returns is an ordinary return here, as a handler that
// writes an error response is in net/http: tasks kept with
// bgpool.WithAfterResponse are still submitted, and the error is returned
// to Echo unchanged, which writes the error response afterwards.
//
// Like bgpool.Middleware, it panics at construction if p or an option is
// nil, never waits on the pool itself, and is safe for concurrent use.
func Middleware(p *bgpool.Pool, opts ...bgpool.MiddlewareOption) echo.MiddlewareFunc {
	mw := bgpool.Middleware(p, opts...)
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			var err error
			h := mw(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) {
				c.SetRequest(r)
				err = next(c)
			}))
			h.ServeHTTP(c.Response(), c.Request())
			return err
		}
	}
}

// Go submits task to the pool that Middleware attached to c's request; see
// bgpool.Go for what it does, how long it blocks and what it returns. It
// returns bgpool.ErrNoPool when Middleware is not in c's chain. It is safe
// for concurrent use, also from goroutines the handler starts.
func Go(c echo.Context, task bgpool.Task) error {
	if c == nil {
		return bgpool.Go(nil, task)
	}
	return bgpool.Go(c.Request(), task)
}
