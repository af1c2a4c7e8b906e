package bgpool

import "github.com/panjf2000/ants/v2"

// antsLoops runs the pool's worker loops on the goroutines of an ants.Pool:
// the pool's one seam with ants, two methods wide. ants keeps finished
// goroutines for the next loop, so that starting a worker rarely starts a
// goroutine.
type antsLoops struct {
	pool *ants.Pool // made by the first start
}

// start runs loop on a goroutine of ants'. It does not block: the ants.Pool
// is unbounded, since the pool's cap is Pool.active's, so ants never refuses
// a loop. Requires p.mu, and that release has not been called.
func (l *antsLoops) start(loop func()) {
	if l.pool == nil {
		a, err := ants.NewPool(-1)
		if err != nil { // cannot happen with no options
			panic("bgpool: ants.NewPool: " + err.Error())
		}
		l.pool = a
	}
	if err := l.pool.Submit(loop); err != nil { // released: the caller broke start's rule
		panic("bgpool: ants.Submit: " + err.Error())
	}
}

// release releases ants, whose idle goroutines then exit on their own; a
// loop still running keeps its goroutine until it returns. It does not
// block. Call it once, when no loop can start any more (see Pool.release).
func (l *antsLoops) release() {
	if l.pool != nil {
		l.pool.Release()
	}
}
