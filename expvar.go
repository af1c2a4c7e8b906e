package bgpool

import "expvar"

// Expvar returns an expvar.Var whose value is p.Stats() as a JSON object, to
// publish under a name of your choosing:
//
//	expvar.Publish("mailpool", bgpool.Expvar(p))
//
// Nothing is registered by this package itself, at import time or later;
// expvar.Publish panics on a name used twice, as it does for any Var. The
// Var takes one brief lock per read and is safe for concurrent use.
//
// Expvar panics, at construction, if p is nil.
func Expvar(p *Pool) expvar.Var {
	if p == nil {
		panic("bgpool: Expvar: nil pool")
	}
	return expvar.Func(func() any { return p.Stats() })
}
