// Command quickstart is the README's "Use it in your app" example: one
// instance of an app with one plugin. Run it in two terminals against one
// database and each instance greets the other:
//
//	PGCOORD_DATABASE_URL=postgres://localhost/app go run ./examples/quickstart
package main

import (
	"context"
	"log"
	"os"
	"os/signal"
	"time"

	"github.com/pgcoord/pgcoord/advisorylock"
	"github.com/pgcoord/pgcoord/app"
	"github.com/pgcoord/pgcoord/listen"
)

// greeter caches a greeting shared by every instance and announces newcomers.
type greeter struct{ app.PluginBase }

func (g *greeter) Name() string { return "greeter" }

func (g *greeter) AfterStart(ctx context.Context, a *app.App) error {
	// One instance at a time sets the greeting (a cluster-wide lock).
	return a.Locks().RunExclusive(ctx, "greeting", 10*time.Second, func(ctx context.Context, _ *advisorylock.Lock) error {
		if err := a.Cache().Set(ctx, "greeting", "hello from "+a.InstanceID(), time.Hour); err != nil {
			return err
		}
		return g.SendSyncMessage(ctx, a.InstanceID()+" joined") // every other instance
	})
}

func (g *greeter) HandleSyncMessage(ctx context.Context, msg listen.Message) error {
	greeting, _, err := g.App().Cache().Get(ctx, "greeting")
	log.Printf("%s (from %s); cached greeting: %v", msg.Payload, msg.Sender, greeting)
	return err
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	cfg, err := app.ConfigFromEnv() // PGCOORD_DATABASE_URL, PGCOORD_APP_NAME, ...
	if err != nil {
		log.Fatal(err)
	}
	cfg.AutoMigrate = true
	cfg.Plugins = []app.Plugin{&greeter{}}
	a, err := app.New(ctx, cfg)
	if err != nil {
		log.Fatal(err)
	}
	if err := a.Start(ctx); err != nil {
		log.Fatal(err)
	}
	log.Printf("%s started; Ctrl-C to stop", a.InstanceID())
	<-ctx.Done()
	if err := a.Stop(context.Background()); err != nil {
		log.Fatal(err)
	}
}
