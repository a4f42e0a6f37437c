package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	wsql "github.com/ThreeDotsLabs/watermill-sql/v4/pkg/sql"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgcoord/pgcoord/internal/bench"
	"github.com/pgcoord/pgcoord/listen"
)

// deliverTimeout bounds one message's delivery on either side.
const deliverTimeout = 30 * time.Second

// watermillRows measures pgcoord's listen against watermill-sql with a 1 ms
// poll and with its default poll.
func watermillRows(ctx context.Context, pool *pgxpool.Pool, ops int) ([]bench.Row, error) {
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	app := fmt.Sprintf("peers%d", time.Now().UnixNano())
	pub, err := listen.New(pool, &listen.Config{AppName: app, InstanceID: "pub", Logger: logger, PruneInterval: -1})
	if err != nil {
		return nil, err
	}
	sub, err := listen.New(pool, &listen.Config{AppName: app, InstanceID: "sub", Logger: logger, PruneInterval: -1})
	if err != nil {
		return nil, err
	}
	ours := make(chan int, 1024)
	if _, err := sub.Subscribe(ctx, "peers", bench.IntSink(ours), nil); err != nil {
		return nil, err
	}
	for _, ps := range []*listen.PubSub{pub, sub} {
		if err := ps.Start(ctx); err != nil {
			return nil, err
		}
		defer ps.Close(context.WithoutCancel(ctx)) //nolint:errcheck
	}
	defer func() {
		_, _ = pool.Exec(context.WithoutCancel(ctx), `DELETE FROM pgcoord.messages WHERE app = $1`, app)
	}()
	oursSide := side{
		publish: func(ctx context.Context, i int) error {
			return pub.Publish(ctx, "peers", json.RawMessage(strconv.Itoa(i)), nil)
		},
		recv: ours,
	}

	var rows []bench.Row
	for _, poll := range []struct {
		name     string
		interval time.Duration // 0: watermill's default
		ops      int
	}{{"poll1ms", time.Millisecond, ops}, {"default", 0, max(ops/10, 4)}} {
		w, stop, err := newWatermill(ctx, pool, app+"_"+poll.name, poll.interval)
		if err != nil {
			return nil, err
		}
		lat, tput, err := compareSides(ctx, oursSide, w, poll.ops)
		stop()
		if err != nil {
			return nil, fmt.Errorf("%s: %w", poll.name, err)
		}
		peer := "watermill-sql v4.1.2, poll " + map[bool]string{true: "1 ms", false: "default (1 s)"}[poll.interval > 0]
		rows = append(rows,
			bench.Latency("watermill.deliver_p50."+poll.name, peer+" p50", lat[0].Percentile(50), lat[1].Percentile(50)),
			bench.Throughput("watermill.throughput_c1."+poll.name, peer+", 1 sequential publisher", tput[0], tput[1]))
	}
	return rows, nil
}

// side is one implementation of publish → deliver: publish sends i, and i
// arrives on recv once delivered.
type side struct {
	publish func(ctx context.Context, i int) error
	recv    <-chan int
}

// newWatermill is a watermill-sql publisher and subscriber (one consumer
// group) on topic, over pool through watermill's pgx adapter.
func newWatermill(ctx context.Context, pool *pgxpool.Pool, topic string, poll time.Duration) (side, func(), error) {
	db := wsql.BeginnerFromPgx(pool)
	schema := wsql.DefaultPostgreSQLSchema{}
	logger := watermill.NopLogger{}
	pub, err := wsql.NewPublisher(db, wsql.PublisherConfig{SchemaAdapter: schema, AutoInitializeSchema: true}, logger)
	if err != nil {
		return side{}, nil, err
	}
	sub, err := wsql.NewSubscriber(db, wsql.SubscriberConfig{
		SchemaAdapter: schema, OffsetsAdapter: wsql.DefaultPostgreSQLOffsetsAdapter{},
		InitializeSchema: true, PollInterval: poll,
	}, logger)
	if err != nil {
		return side{}, nil, err
	}
	sctx, cancel := context.WithCancel(ctx)
	msgs, err := sub.Subscribe(sctx, topic)
	if err != nil {
		cancel()
		return side{}, nil, err
	}
	recv := make(chan int, 1024)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for m := range msgs {
			if i, err := strconv.Atoi(string(m.Payload)); err == nil {
				recv <- i
			}
			m.Ack()
		}
	}()
	stop := func() {
		cancel()
		_ = sub.Close()
		<-done
		_ = pub.Close()
		for _, t := range []string{schema.MessagesTable(topic), wsql.DefaultPostgreSQLOffsetsAdapter{}.MessagesOffsetsTable(topic)} {
			_, _ = pool.Exec(context.WithoutCancel(ctx), `DROP TABLE IF EXISTS `+t)
		}
	}
	s := side{recv: recv, publish: func(ctx context.Context, i int) error {
		return pub.Publish(topic, message.NewMessage(watermill.NewUUID(), []byte(strconv.Itoa(i))))
	}}
	// The subscriber creates its tables as it starts; the first delivery
	// shows it is reading.
	if _, err := trip(ctx, s, -1); err != nil {
		stop()
		return side{}, nil, fmt.Errorf("first message: %w", err)
	}
	return s, stop, nil
}

// compareSides measures a (pgcoord) and b (the peer) alternately in chunks:
// each side's latencies with one message in flight, and its messages per
// second from one sequential publisher until the last was delivered.
func compareSides(ctx context.Context, a, b side, n int) ([2]bench.Sample, [2]float64, error) {
	const chunk = 20
	var (
		lat     [2]bench.Sample
		elapsed [2]time.Duration
	)
	id := 0
	for done := 0; done < n; done += chunk {
		m := min(chunk, n-done)
		for k, s := range []side{a, b} {
			for range m {
				d, err := trip(ctx, s, id)
				if err != nil {
					return lat, [2]float64{}, err
				}
				lat[k] = append(lat[k], d)
				id++
			}
			d, err := burst(ctx, s, id, m)
			if err != nil {
				return lat, [2]float64{}, err
			}
			elapsed[k] += d
			id += m
		}
	}
	return lat, [2]float64{float64(n) / elapsed[0].Seconds(), float64(n) / elapsed[1].Seconds()}, nil
}

// trip publishes id and waits until it is delivered.
func trip(ctx context.Context, s side, id int) (time.Duration, error) {
	t0 := time.Now()
	if err := s.publish(ctx, id); err != nil {
		return 0, err
	}
	err := await(ctx, s.recv, id, id+1)
	return time.Since(t0), err
}

// burst publishes ids first … first+n-1 one after another and returns the
// time until the last of them was delivered.
func burst(ctx context.Context, s side, first, n int) (time.Duration, error) {
	t0 := time.Now()
	for i := range n {
		if err := s.publish(ctx, first+i); err != nil {
			return 0, err
		}
	}
	err := await(ctx, s.recv, first, first+n)
	return time.Since(t0), err
}

// await receives from recv until every id in [lo, hi) arrived.
func await(ctx context.Context, recv <-chan int, lo, hi int) error {
	timeout := time.NewTimer(deliverTimeout)
	defer timeout.Stop()
	seen := make(map[int]bool, hi-lo)
	for len(seen) < hi-lo {
		select {
		case i := <-recv:
			if i >= lo && i < hi {
				seen[i] = true
			}
		case <-timeout.C:
			return errors.New("not delivered within " + deliverTimeout.String())
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}
