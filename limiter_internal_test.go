package bgpool

import (
	"testing"
	"time"

	"golang.org/x/time/rate"
)

// The Limiter that WithRateLimit builds: Allow takes a token when there is
// one, and otherwise takes none and says when the next is due.
func TestTokenBucketAllowSaysWhenTheNextTokenIsDue(t *testing.T) {
	tb := tokenBucket{rate.NewLimiter(10, 1)}
	if ok, d := tb.Allow(); !ok || d != 0 {
		t.Fatalf("first Allow: got %v, %v; want true, 0", ok, d)
	}
	ok, d := tb.Allow()
	if ok || d <= 0 || d > 100*time.Millisecond {
		t.Fatalf("second Allow: got %v, %v; want false and at most 100ms", ok, d)
	}
	if tokens := tb.lim.Tokens(); tokens < -0.01 {
		t.Fatalf("a refused Allow took a token: %v left", tokens)
	}
}
