package bgredis

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
)

// A Cause names why a Redis call failed, as Stats and the log give it. The
// Limiter decides without Redis whatever the cause; the cause says what to
// mend. CauseAuth, CausePermission and CauseClosed are configuration errors
// (see Cause.IsConfig): no wait mends them, so the log gives them at Error
// level, and Limiter.Check reports them at startup.
type Cause string

// The causes of a failed Redis call.
const (
	// CauseAuth is Redis rejecting the credentials: WRONGPASS (a wrong
	// username or password) or NOAUTH (none where Redis requires one).
	CauseAuth Cause = "auth"
	// CausePermission is Redis denying the user a command (NOPERM). An ACL
	// user needs EVALSHA, EVAL and the script's GET, SET and TIME, on keys
	// rate:* ("ACL SETUSER name on >pass ~rate:* +evalsha +eval +get +set
	// +time").
	CausePermission Cause = "permission"
	// CauseClosed is a call on a client that was closed.
	CauseClosed Cause = "closed"
	// CauseRefused is nothing accepting the connection at the address:
	// Redis is not running there, or not yet.
	CauseRefused Cause = "refused"
	// CauseTimeout is no answer within the timeout (WithTimeout), or within
	// the client's own dial, read or pool timeout.
	CauseTimeout Cause = "timeout"
	// CauseNetwork is another network error: a connection reset or closed
	// by the server, an unknown host, an unreachable network.
	CauseNetwork Cause = "network"
	// CauseRedis is Redis answering with an error of another kind: WRONGTYPE
	// (the key holds a value of another type), OOM, LOADING, READONLY.
	CauseRedis Cause = "redis-error"
	// CauseOther is an error of none of the kinds above.
	CauseOther Cause = "other"
)

// IsConfig reports whether c is a configuration error: credentials,
// permissions or a closed client, which Redis coming back does not mend.
func (c Cause) IsConfig() bool {
	return c == CauseAuth || c == CausePermission || c == CauseClosed
}

// level is the level of the log line that reports c: Error for a
// configuration error, Warn for an outage.
func (c Cause) level() slog.Level {
	if c.IsConfig() {
		return slog.LevelError
	}
	return slog.LevelWarn
}

// summary is what happened, as the log's message says it.
func (c Cause) summary() string {
	switch c {
	case CauseAuth:
		return "Redis rejected the credentials"
	case CausePermission:
		return "Redis denied the user a command"
	case CauseClosed:
		return "the Redis client is closed"
	case CauseRefused:
		return "Redis refused the connection"
	case CauseTimeout:
		return "Redis did not answer in time"
	case CauseNetwork:
		return "the connection to Redis failed"
	case CauseRedis:
		return "Redis answered with an error"
	}
	return "the Redis call failed"
}

// classify names the cause of err, an error of a go-redis call or of a dial.
// The order matters: a closed client's error, Redis' error replies and a
// refused dial are told apart before the broader kinds they belong to.
func classify(err error) Cause {
	var rerr redis.Error
	var nerr net.Error
	switch {
	case errors.Is(err, redis.ErrClosed):
		return CauseClosed
	case redis.IsAuthError(err):
		return CauseAuth
	case redis.IsPermissionError(err):
		return CausePermission
	case errors.Is(err, syscall.ECONNREFUSED):
		return CauseRefused
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, redis.ErrPoolTimeout),
		errors.As(err, &nerr) && nerr.Timeout():
		return CauseTimeout
	case errors.As(err, &rerr):
		return CauseRedis
	case errors.As(err, &nerr), errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF),
		errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE), errors.Is(err, net.ErrClosed):
		return CauseNetwork
	}
	return CauseOther
}

// failure is a failed Redis call: its cause and the error that shows it.
// Its Error is what Stats.LastError gives.
type failure struct {
	cause Cause
	// what says what happened where the client's error alone does not: a
	// call that the timeout ended. "" means cause.summary().
	what string
	err  error // the client's or the dial's error; context.DeadlineExceeded for no answer at all
}

// explained returns the failure of a call that failed with err, err being
// the client's error as it is.
func explained(err error) *failure { return &failure{cause: classify(err), err: err} }

func (f *failure) Error() string { return f.phrase() + ": " + f.err.Error() }

func (f *failure) Unwrap() error { return f.err }

func (f *failure) phrase() string {
	if f.what != "" {
		return f.what
	}
	return f.cause.summary()
}

// detail is the failure as the log's error attribute gives it: the error,
// preceded by what happened when the message does not say it already.
func (f *failure) detail() string {
	if f.what != "" {
		return f.Error()
	}
	return f.err.Error()
}

// dialWatch is a go-redis hook on a Limiter's client that notes the
// client's dials. go-redis dials on a goroutine of its own and retries a
// failed dial (5 times, 100ms apart, by default), so a call that the timeout
// ends learns nothing from the client but its context's error, even when
// the first dial was refused at once; the watch knows. It wraps only dials:
// commands do not pass through it. It is safe for concurrent use.
type dialWatch struct {
	dialing atomic.Int32
	last    atomic.Pointer[dialResult]
}

// dialResult is how a dial ended, and when (monotonic, from now()).
type dialResult struct {
	at  int64
	err error
}

// DialHook notes each dial of the client: that it is under way, then its
// result.
func (w *dialWatch) DialHook(next redis.DialHook) redis.DialHook {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		w.dialing.Add(1)
		conn, err := next(ctx, network, addr)
		w.dialing.Add(-1)
		w.last.Store(&dialResult{at: now(), err: err})
		return conn, err
	}
}

// watchDials returns a dialWatch on rdb's dials, where go-redis lets one
// be added: on a Client itself, on each node that a ClusterClient makes from
// now on (nodes it made before are not watched), on each shard of a Ring
// that is up now or that it makes later. It returns nil for a client of
// another type.
func watchDials(rdb redis.UniversalClient) *dialWatch {
	w := new(dialWatch)
	add := func(c *redis.Client) { c.AddHook(w) }
	switch c := rdb.(type) {
	case *redis.Client:
		add(c)
	case *redis.ClusterClient:
		c.OnNewNode(add)
	case *redis.Ring:
		// A shard made between these two lines is watched twice: each of
		// its dials is noted twice, which changes nothing.
		c.OnNewNode(add)
		_ = c.ForEachShard(context.Background(), func(_ context.Context, shard *redis.Client) error {
			add(shard)
			return nil
		})
	default:
		return nil
	}
	return w
}

// ProcessHook leaves commands alone: nil adds no wrapper.
func (*dialWatch) ProcessHook(redis.ProcessHook) redis.ProcessHook { return nil }

// ProcessPipelineHook leaves pipelines alone: nil adds no wrapper.
func (*dialWatch) ProcessPipelineHook(redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return nil
}

// noAnswer explains a call that began at began and that the timeout ended
// before the client returned: the dial's error if the client's last dial
// since began failed, else whether a dial was still under way, else no
// answer. w may be nil (a client the Limiter does not watch).
func (w *dialWatch) noAnswer(timeout time.Duration, began int64) *failure {
	if w != nil {
		if d := w.last.Load(); d != nil && d.at >= began && d.err != nil {
			return &failure{cause: classify(d.err), what: fmt.Sprintf("no connection to Redis within %v", timeout), err: d.err}
		}
		if w.dialing.Load() > 0 {
			return &failure{cause: CauseTimeout, what: fmt.Sprintf("no connection to Redis within %v (still dialling)", timeout), err: context.DeadlineExceeded}
		}
	}
	return &failure{cause: CauseTimeout, what: fmt.Sprintf("no answer from Redis within %v", timeout), err: context.DeadlineExceeded}
}

var _ redis.Hook = (*dialWatch)(nil)
