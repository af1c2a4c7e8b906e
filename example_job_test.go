package bgpool_test

import (
	"context"
	"fmt"

	"github.com/bgpool/bgpool"
)

// WelcomeArgs are the args of a welcome mail: plain data with a kind, the
// shape River's JobArgs has too.
type WelcomeArgs struct {
	Email string `json:"email"`
}

func (WelcomeArgs) Kind() string { return "welcome_mail" }

func ExampleNewJob() {
	p, err := bgpool.New(2)
	if err != nil {
		panic(err)
	}
	welcome := bgpool.NewJob(func(ctx context.Context, a WelcomeArgs) error {
		fmt.Println("mail to", a.Email)
		return nil
	})
	if err := welcome.Do(context.Background(), p, WelcomeArgs{Email: "ada@example.com"}); err != nil {
		fmt.Println(err)
	}
	_ = p.Shutdown(context.Background())
	// Output:
	// mail to ada@example.com
}

// printHandoff stands for a durable queue (see the contrib/river module).
type printHandoff struct{}

func (printHandoff) Handoff(_ context.Context, jobs []bgpool.JobArgs) error {
	for _, j := range jobs {
		fmt.Printf("handed off %s %+v\n", j.Kind(), j)
	}
	return nil
}

func ExampleWithHandoff() {
	p, err := bgpool.New(1, bgpool.WithQueueSize(0), bgpool.WithPolicy(bgpool.Spill), bgpool.WithHandoff(printHandoff{}))
	if err != nil {
		panic(err)
	}
	release := make(chan struct{})
	_ = p.Submit(context.Background(), func(context.Context) error { <-release; return nil })

	welcome := bgpool.NewJob(func(ctx context.Context, a WelcomeArgs) error { return nil })
	// The only worker is busy and there is no queue: Spill hands the Job off.
	_ = welcome.Submit(context.Background(), p, WelcomeArgs{Email: "ada@example.com"})

	close(release)
	_ = p.Shutdown(context.Background())
	fmt.Println("handed off:", p.Stats().HandedOff)
	// Output:
	// handed off welcome_mail {Email:ada@example.com}
	// handed off: 1
}
