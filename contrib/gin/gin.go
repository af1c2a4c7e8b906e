// Package bggin adapts bgpool's HTTP middleware to Gin.
//
//	r := gin.New()
//	r.Use(gin.Recovery(), bggin.Middleware(pool))
//	r.POST("/signup", func(c *gin.Context) {
//		if err := bggin.Go(c, sendWelcomeMail); err != nil {
//			c.Header("Retry-After", "1")
//			c.String(http.StatusServiceUnavailable, "too busy, retry later")
//			return
//		}
//		c.Status(http.StatusAccepted)
//	})
//
// It lives in its own module, github.com/bgpool/bgpool/contrib/gin, so that
// bgpool itself does not depend on Gin. For the shutdown sequence, pass the
// engine as the http.Server's Handler to bgpool.Serve or
// bgpool.ListenAndServe.
package bggin

import (
	"net/http"

	"github.com/gin-gonic/gin"

	"github.com/bgpool/bgpool"
)

// Middleware returns Gin middleware that behaves like bgpool.Middleware with
// the same options: it attaches p to the context of c.Request, so that the
// handlers after it can call Go (or bgpool.FromContext with
// c.Request.Context()). With bgpool.WithShedding it answers 503 itself and
// aborts the chain; with bgpool.WithAfterResponse it submits the tasks once
// the rest of the chain has returned, and discards them if the chain
// panics. Register gin.Recovery before it, so that the panic reaches
// Recovery through it.
//
// Like bgpool.Middleware, it panics at construction if p or an option is
// nil, never waits on the pool itself, and is safe for concurrent use.
func Middleware(p *bgpool.Pool, opts ...bgpool.MiddlewareOption) gin.HandlerFunc {
	mw := bgpool.Middleware(p, opts...)
	return func(c *gin.Context) {
		called := false
		h := mw(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) {
			called = true
			c.Request = r
			c.Next()
		}))
		h.ServeHTTP(c.Writer, c.Request)
		if !called { // shed: the 503 is written
			c.Abort()
		}
	}
}

// Go submits task to the pool that Middleware attached to c's request; see
// bgpool.Go for what it does, how long it blocks and what it returns. It
// returns bgpool.ErrNoPool when Middleware is not in c's chain. It is safe
// for concurrent use, also from goroutines the handler starts (for those,
// Gin's documentation asks for c.Copy(), which keeps the request).
func Go(c *gin.Context, task bgpool.Task) error {
	if c == nil {
		return bgpool.Go(nil, task)
	}
	return bgpool.Go(c.Request, task)
}
