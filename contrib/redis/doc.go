// Package bgredis is a bgpool.Limiter on Redis: one start rate shared by
// every process, and so every replica of a service, that uses the same key.
// A limiter of golang.org/x/time/rate in each of N replicas allows N times
// the rate a downstream can take; this one allows the rate once.
//
//	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:6379"})
//	lim := bgredis.NewLimiter(rdb, "mail", redis_rate.PerSecond(100))
//	p, err := bgpool.New(8, bgpool.WithLimiter(lim))
//	if err != nil {
//		return err
//	}
//	// every task submitted to p, in any process using "mail", waits for a
//	// token of the shared 100/s before it starts
//
// The rate is kept by github.com/go-redis/redis_rate (the generic cell rate
// algorithm, one script call per decision) on a github.com/redis/go-redis/v9
// client: a Client, a ClusterClient, a Ring or a failover client.
//
// # When Redis is down
//
// A Limiter never hangs on Redis: each call is bounded by a timeout
// (WithTimeout, 250ms by default) and by the caller's context. A call that
// fails or times out takes Redis as down; until Redis answers again (one
// decision per probe interval asks it) the Limiter decides without it:
//
//   - WithFallbackRate (the default): a token bucket in this process, at the
//     Redis limit's own rate and burst unless given another. Work goes on at
//     a bounded rate; N replicas may together reach N times the limit.
//   - WithFailOpen: every task starts. For limits that are a courtesy.
//   - WithFailClosed: every task is refused; the pool drops it, counts it
//     Dropped and reports ErrUnavailable. For limits that must never be
//     exceeded.
//
// The default keeps the limit bounded without losing work: failing open
// lets every replica run unthrottled into the downstream the limit protects,
// and failing closed turns a Redis outage into an outage of all background
// work. A burst of calls above the shared limit is usually recoverable (the
// downstream answers 429 and the task retries); a dropped task is not.
//
// Each change between up and down is logged once (WithLogger), with the
// cause: the credentials, a refused connection, a timeout, an error answer;
// so is an outage that turns into a configuration error or out of one.
// Limiter.Stats counts Redis errors, outages and the decisions made without
// Redis, and gives the last cause and error; it marshals to JSON.
//
// # Configuration errors
//
// A wrong password (WRONGPASS, NOAUTH), an ACL that denies the script
// (NOPERM) or a closed client is no outage: waiting does not mend it. The
// Limiter still decides without Redis, in its mode, since it has no other
// way to decide; but it logs the change at Error level, not Warn, and
// Stats.LastCause.IsConfig reports true. To fail at startup instead, call
// Limiter.Check, which asks Redis once and returns an error that names the
// cause:
//
//	if err := lim.Check(ctx); err != nil {
//		return err // bgredis: Redis rejected the credentials: WRONGPASS ...
//	}
//
// # Bad input
//
// NewLimiter returns no error, so it follows bgpool's rule for such
// constructors: a nil client, an empty key, an invalid limit or an invalid
// option is a programming error, and it panics at once with a message that
// starts with "bgredis:" rather than fail at the first task.
package bgredis
