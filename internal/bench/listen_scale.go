package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgcoord/pgcoord/listen"
)

// listenScaleInstances is the number of listening instances of the
// listen.scale rows.
const listenScaleInstances = 48

// listenScale is listen.scale.n48 and listen.scale_p50.n48: one message
// published by one instance reaches 48 listening instances (separate
// PubSubs, each with its own pool and listener connection); vs an
// autocommit pg_notify reaching 48 LISTEN connections.
//
//   - listen.scale.n48: deliveries per second (messages × 48, until the last
//     delivery) while listenPublishers goroutines publish;
//   - listen.scale_p50.n48: p50 of every delivery's latency, from the start
//     of the publish, with one message in flight;
//   - listen.scale_server_cpu.n48: the server's CPU time (the processes of
//     the PostgreSQL instance alive at the end of the run) per delivery
//     during the throughput runs, when the server runs on this machine and
//     its data directory is readable ([serverCPU]); docs/scaling.md derives
//     deliveries/s per core from it;
//   - listen.scale_client_cpu.n48: this process's CPU time per delivery in
//     the same runs (the publishers and all 48 instances live in it).
//
// The sides alternate in listenRounds rounds.
func listenScale(ctx context.Context, base *pgxpool.Config, pub *listen.PubSub, p *pgxpool.Pool, opts Options) ([]Row, error) {
	const n = listenScaleInstances
	app := pub.AppName()
	latMsgs := max(opts.Ops/20, 8)
	tputMsgs := max(opts.Ops/4, 2*listenPublishers)
	buffer := n*max(latMsgs, tputMsgs) + 1024
	var (
		wg     sync.WaitGroup
		pools  []*pgxpool.Pool
		subs   []*listen.PubSub
		conns  = make([]*pgx.Conn, n)
		ours   = make(chan int, buffer)
		raw    = make(chan int, buffer)
		logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	)
	lctx, stop := context.WithCancel(context.WithoutCancel(ctx))
	defer func() {
		stop()
		wg.Wait()
		closeAll(n, func(i int) {
			if conns[i] != nil {
				_ = conns[i].Close(context.WithoutCancel(ctx))
			}
			if i < len(subs) {
				_ = subs[i].Close(context.WithoutCancel(ctx))
			}
		})
		for _, p := range pools {
			p.Close()
		}
	}()
	rawChannel := pgx.Identifier{opts.Prefix + "_scale"}
	for i := range n {
		cfg := base.Copy()
		cfg.MaxConns, cfg.MinConns = 2, 0
		ip, err := pgxpool.NewWithConfig(ctx, cfg)
		if err != nil {
			return nil, err
		}
		pools = append(pools, ip)
		s, err := listen.New(ip, &listen.Config{AppName: app, InstanceID: fmt.Sprintf("scale-%d", i), Schema: opts.Schema, Logger: logger, PruneInterval: -1})
		if err != nil {
			return nil, err
		}
		subs = append(subs, s)
		if _, err := s.Subscribe(ctx, "scale", IntSink(ours), &listen.SubscribeOpts{BufferSize: buffer}); err != nil {
			return nil, err
		}
	}
	err := startAll(ctx, n, func(ctx context.Context, i int) error {
		if err := subs[i].Start(ctx); err != nil {
			return err
		}
		c, err := pgx.ConnectConfig(ctx, base.ConnConfig.Copy())
		if err != nil {
			return err
		}
		conns[i] = c
		_, err = c.Exec(ctx, "LISTEN "+rawChannel.Sanitize())
		return err
	})
	if err != nil {
		return nil, err
	}
	for _, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			forwardNotifications(lctx, c, raw)
		}()
	}
	oursPublish := func(ctx context.Context, i int) error {
		return pub.Publish(ctx, "scale", json.RawMessage(strconv.Itoa(i)), nil)
	}
	rawPublish := func(ctx context.Context, i int) error {
		_, err := p.Exec(ctx, `SELECT pg_notify($1, $2)`, rawChannel[0], strconv.Itoa(i))
		return err
	}

	var oursLat, rawLat Sample
	var oursRate, rawRate []float64
	// CPU seconds and deliveries of the throughput runs, per side.
	var oursCPU, rawCPU struct{ server, client, deliveries float64 }
	_, serverOK := serverCPU(ctx, p)
	id := 0 // every message of the run has its own id
	for range listenRounds {
		for _, x := range []struct {
			publish func(context.Context, int) error
			recv    chan int
			lat     *Sample
			rate    *[]float64
			cpu     *struct{ server, client, deliveries float64 }
		}{{rawPublish, raw, &rawLat, &rawRate, &rawCPU}, {oursPublish, ours, &oursLat, &oursRate, &oursCPU}} {
			for range latMsgs {
				l, err := fanoutTrip(ctx, x.publish, x.recv, id, n)
				if err != nil {
					return nil, fmt.Errorf("bench listen.scale: latency: %w", err)
				}
				*x.lat = append(*x.lat, l...)
				id++
			}
			server0, _ := serverCPU(ctx, p)
			client0 := processCPU()
			r, err := fanoutThroughput(ctx, x.publish, x.recv, id, tputMsgs, n)
			if err != nil {
				return nil, fmt.Errorf("bench listen.scale: throughput: %w", err)
			}
			server1, _ := serverCPU(ctx, p)
			x.cpu.server += server1.since(server0)
			x.cpu.client += processCPU() - client0
			x.cpu.deliveries += float64(tputMsgs * n)
			*x.rate = append(*x.rate, r)
			id += tputMsgs
		}
	}
	rows := []Row{
		Throughput(fmt.Sprintf("listen.scale.n%d", n), fmt.Sprintf("autocommit pg_notify → %d LISTEN conns, %d senders (deliveries/s)", n, listenPublishers), best(oursRate), best(rawRate)),
		Latency(fmt.Sprintf("listen.scale_p50.n%d", n), fmt.Sprintf("pg_notify → %d LISTEN conns p50", n), oursLat.Percentile(50), rawLat.Percentile(50)),
	}
	perDelivery := func(sec, deliveries float64) time.Duration {
		return time.Duration(sec / deliveries * float64(time.Second))
	}
	if serverOK {
		rows = append(rows, Latency(fmt.Sprintf("listen.scale_server_cpu.n%d", n), fmt.Sprintf("server CPU per delivery, pg_notify → %d LISTEN conns", n),
			perDelivery(oursCPU.server, oursCPU.deliveries), perDelivery(rawCPU.server, rawCPU.deliveries)))
	}
	rows = append(rows, Latency(fmt.Sprintf("listen.scale_client_cpu.n%d", n), fmt.Sprintf("client CPU per delivery, pg_notify → %d LISTEN conns", n),
		perDelivery(oursCPU.client, oursCPU.deliveries), perDelivery(rawCPU.client, rawCPU.deliveries)))
	return rows, nil
}

// cpuSample is the CPU ticks of each process of a PostgreSQL instance (the
// postmaster and its live children), by pid.
type cpuSample map[int]float64

// since returns the CPU seconds the instance's processes used between
// before and s: for each process of s, its ticks less those it had in
// before (all of them if it is new). A process that ended in between is
// left out (its time after before is lost, never subtracted): the result is
// never negative, whatever backends of other sessions come and go while a
// run is measured (the test servers are shared by concurrent tests).
// Clock ticks are USER_HZ, 100 on Linux.
func (s cpuSample) since(before cpuSample) float64 {
	const userHZ = 100
	ticks := 0.0
	for pid, t := range s {
		ticks += t - min(before[pid], t)
	}
	return ticks / userHZ
}

// serverCPU samples the CPU ticks used so far by each process of the
// PostgreSQL instance behind p (the postmaster and its live children),
// read from /proc; ok is false unless the server runs on this machine and
// its data directory is readable (a local superuser connection, as the
// throwaway server's).
func serverCPU(ctx context.Context, p *pgxpool.Pool) (sample cpuSample, ok bool) {
	var dir string
	if err := p.QueryRow(ctx, `SELECT current_setting('data_directory')`).Scan(&dir); err != nil {
		return nil, false
	}
	pidFile, err := os.ReadFile(filepath.Join(dir, "postmaster.pid"))
	if err != nil {
		return nil, false
	}
	first, _, _ := strings.Cut(string(pidFile), "\n")
	postmaster, err := strconv.Atoi(strings.TrimSpace(first))
	if err != nil {
		return nil, false
	}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil, false
	}
	sample = cpuSample{}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// Fields after "(comm) ": state ppid … utime(12) stime(13),
		// counted from state as 1.
		s := string(stat)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
		if len(f) < 13 {
			continue
		}
		if ppid, _ := strconv.Atoi(f[1]); pid != postmaster && ppid != postmaster {
			continue
		}
		for _, v := range f[11:13] {
			n, _ := strconv.ParseFloat(v, 64)
			sample[pid] += n
		}
	}
	return sample, true
}

// processCPU returns the CPU seconds this process has used.
func processCPU() float64 {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
}

// fanoutTrip publishes id and returns the latency of each of its fanout
// deliveries on recv, from the start of the publish.
func fanoutTrip(ctx context.Context, publish func(context.Context, int) error, recv <-chan int, id, fanout int) (Sample, error) {
	t0 := time.Now()
	if err := publish(ctx, id); err != nil {
		return nil, err
	}
	timeout := time.NewTimer(30 * time.Second)
	defer timeout.Stop()
	out := make(Sample, 0, fanout)
	for len(out) < fanout {
		select {
		case got := <-recv:
			if got == id {
				out = append(out, time.Since(t0))
			}
		case <-timeout.C:
			return nil, fmt.Errorf("%d of %d deliveries within 30s", len(out), fanout)
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return out, nil
}

// fanoutThroughput publishes ids first … first+msgs-1 from listenPublishers
// goroutines and returns deliveries per second until all msgs × fanout
// deliveries arrived on recv.
func fanoutThroughput(ctx context.Context, publish func(context.Context, int) error, recv <-chan int, first, msgs, fanout int) (float64, error) {
	start := time.Now()
	errc := make(chan error, 1)
	go func() {
		_, _, err := Run(ctx, msgs, listenPublishers, func(ctx context.Context, i int) error { return publish(ctx, first+i) })
		errc <- err
	}()
	timeout := time.NewTimer(2 * time.Minute)
	defer timeout.Stop()
	want := msgs * fanout
	for got := 0; got < want; {
		select {
		case v := <-recv:
			if v >= first && v < first+msgs {
				got++
			}
		case err := <-errc:
			if err != nil {
				return 0, err
			}
			errc = nil
		case <-timeout.C:
			return 0, fmt.Errorf("%d of %d deliveries within 2m", got, want)
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
	elapsed := time.Since(start)
	if errc != nil {
		if err := <-errc; err != nil {
			return 0, err
		}
	}
	return float64(want) / elapsed.Seconds(), nil
}
