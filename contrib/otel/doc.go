// Package bgotel exports a bgpool.Pool's state and task outcomes as
// OpenTelemetry metrics, and runs each of its tasks in a span.
//
// Metrics are set up like the Prometheus collector in contrib/prometheus:
//
//	m, err := bgotel.NewMetrics("mail") // the global MeterProvider, or WithMeterProvider
//	if err != nil {
//		return err
//	}
//	t, err := bgotel.NewTracing("mail") // the global TracerProvider, or WithTracerProvider
//	if err != nil {
//		return err
//	}
//	p, err := bgpool.New(8,
//		bgpool.WithObserver(m.Observe), // feeds the histograms
//		bgpool.WithTaskWrapper(t.Wrap), // a span per task
//	)
//	if err != nil {
//		return err
//	}
//	m.Watch(p) // the state and the counters come from p.Stats()
//
// The instruments, each with the attribute bgpool.pool.name:
//
//	bgpool.worker.limit        UpDownCounter  {worker}   the cap on tasks running at once (Stats.Workers)
//	bgpool.task.running        UpDownCounter  {task}     tasks executing (Stats.Running)
//	bgpool.queue.length        UpDownCounter  {task}     tasks waiting for a worker (Stats.Queued)
//	bgpool.queue.capacity      UpDownCounter  {task}     the queue's capacity (Stats.QueueSize)
//	bgpool.submit.waiting      UpDownCounter  {call}     Submit calls waiting for room (Stats.Waiting)
//	bgpool.tasks               Counter        {task}     tasks that reached an outcome, by bgpool.task.outcome
//	bgpool.shed_requests       Counter        {request}  HTTP requests answered 503 by WithShedding (Stats.Shed)
//	bgpool.task.time_in_queue  Histogram      s          time from admission to start or discarding
//	bgpool.task.duration       Histogram      s          run time of tasks that ran, by bgpool.task.outcome
//
// The UpDownCounters and Counters are observable instruments read from one
// call to p.Stats() per collection, so they always agree with Stats. The
// histograms are fed per task by Metrics.Observe, since Stats keeps no
// timings.
//
// Tracing.Wrap starts each task's span as a new root linked to the
// submitter's span rather than as its child: a background task usually
// outlives the request that submitted it. See Tracing.
//
// It lives in its own module, github.com/bgpool/bgpool/contrib/otel, so that
// bgpool itself does not depend on OpenTelemetry. It needs Go 1.26, as
// OpenTelemetry-Go v1.47 does.
package bgotel
