// Command instructions runs a fixed number of empty tasks through one way of
// running them, for instructions.sh, which counts the instructions under
// valgrind --tool=callgrind. Run it with GOMAXPROCS=1 and a binary built
// with CGO_ENABLED=0; see instructions.sh.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/bgpool/bgpool"
)

func main() {
	mode := flag.String("mode", "bgpool", "channel, bgpool, bgpool-timeout, bgpool-overload, channel-do or do")
	n := flag.Int("n", 100_000, "tasks to run")
	workers := flag.Int("workers", 64, "workers")
	queue := flag.Int("queue", 1024, "queue size")
	flag.Parse()
	if err := run(*mode, *n, *workers, *queue); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func run(mode string, n, workers, queue int) error {
	ctx := context.Background()
	var wg sync.WaitGroup
	switch mode {
	case "channel": // the floor: a buffered channel feeding long-lived goroutines
		ch := make(chan func(), queue)
		var done sync.WaitGroup
		for range workers {
			done.Go(func() {
				for f := range ch {
					f()
				}
			})
		}
		task := func() { wg.Done() }
		wg.Add(n)
		for range n {
			ch <- task
		}
		wg.Wait()
		close(ch)
		done.Wait()
		return nil
	case "channel-do": // the floor for Do: hand a func to a worker, wait on a done channel
		ch := make(chan func(), queue)
		var done sync.WaitGroup
		for range workers {
			done.Go(func() {
				for f := range ch {
					f()
				}
			})
		}
		for range n {
			c := make(chan struct{})
			ch <- func() { close(c) }
			<-c
		}
		close(ch)
		done.Wait()
		return nil
	case "bgpool", "bgpool-timeout", "bgpool-overload":
		opts := []bgpool.Option{bgpool.WithQueueSize(queue)}
		switch mode {
		case "bgpool-timeout":
			opts = append(opts, bgpool.WithTaskTimeout(time.Minute), bgpool.WithRateLimit(rate.Inf, 1))
		case "bgpool-overload": // both overload options
			opts = append(opts, bgpool.WithAdaptiveConcurrency(1, workers), bgpool.WithQueueDelayTarget(time.Hour)) // a target no task reaches: every task runs, each through the delay control's path
		}
		p, err := bgpool.New(workers, opts...)
		if err != nil {
			return err
		}
		task := func(context.Context) error { wg.Done(); return nil }
		wg.Add(n)
		for range n {
			if err := p.Submit(ctx, task); err != nil {
				return err
			}
		}
		wg.Wait()
		return nil // no Shutdown: the count is of the tasks, and the process exits
	case "do":
		p, err := bgpool.New(workers, bgpool.WithQueueSize(queue))
		if err != nil {
			return err
		}
		task := func(context.Context) error { return nil }
		for range n {
			if err := p.Do(ctx, task); err != nil {
				return err
			}
		}
		return nil
	}
	return fmt.Errorf("unknown mode %q", mode)
}
