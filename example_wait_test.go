package bgpool_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/bgpool/bgpool"
)

func ExamplePool_Do() {
	p, _ := bgpool.New(4, bgpool.WithErrorHandler(func(context.Context, error) {}))
	defer p.Shutdown(context.Background())

	// Do runs the task on the pool, under its cap, and waits for its error.
	err := p.Do(context.Background(), func(ctx context.Context) error {
		return errors.New("smtp: 421 try again later")
	})
	fmt.Println("send:", err)

	// A ctx that ends stops the wait, not the task.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	finished := make(chan struct{})
	err = p.Do(ctx, func(context.Context) error {
		defer close(finished)
		time.Sleep(50 * time.Millisecond)
		return nil
	})
	fmt.Println("slow task:", err)
	<-finished
	fmt.Println("it finished all the same")
	// Output:
	// send: smtp: 421 try again later
	// slow task: context deadline exceeded
	// it finished all the same
}

// lookupPrice stands for a call to another service.
func lookupPrice(_ context.Context, item int) (int, error) {
	if item == 13 {
		return 0, fmt.Errorf("item %d: not found", item)
	}
	return 100 + item, nil
}

// A request fans out to 10 lookups on the pool that the whole service
// shares, and answers with their results; the first failure cancels the
// lookups that are still running.
func ExampleGroup() {
	p, _ := bgpool.New(4, bgpool.WithErrorHandler(func(context.Context, error) {}))
	defer p.Shutdown(context.Background())

	quote := func(ctx context.Context, items []int) ([]int, error) {
		// Every task gets the group's context: it has ctx's values, and is
		// cancelled by the first failure, by ctx, and by the pool's shutdown.
		g, _ := p.NewGroup(ctx)
		prices := make([]int, len(items))
		for i, item := range items {
			err := g.Submit(func(ctx context.Context) error {
				price, err := lookupPrice(ctx, item)
				prices[i] = price // each task writes its own element
				return err
			})
			if err != nil { // not admitted: ErrOverloaded or ErrClosed
				break
			}
		}
		if err := g.Wait(); err != nil {
			return nil, err
		}
		return prices, nil
	}

	fmt.Println(quote(context.Background(), []int{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}))
	fmt.Println(quote(context.Background(), []int{11, 12, 13, 14}))
	// Output:
	// [101 102 103 104 105 106 107 108 109 110] <nil>
	// [] item 13: not found
}

func ExampleSubmit() {
	p, _ := bgpool.New(4)
	defer p.Shutdown(context.Background())

	ctx := context.Background()
	futures := make([]*bgpool.Future[int], 3)
	for i := range futures {
		f, err := bgpool.Submit(ctx, p, func(ctx context.Context) (int, error) {
			return lookupPrice(ctx, i)
		})
		if err != nil {
			fmt.Println("not submitted:", err)
			return
		}
		futures[i] = f
	}
	for i, f := range futures {
		price, err := f.Wait(ctx) // blocks until the task has ended, or ctx ends
		fmt.Println(i, price, err)
	}
	// Output:
	// 0 100 <nil>
	// 1 101 <nil>
	// 2 102 <nil>
}
