package advisorylock

import (
	"context"
	"errors"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/pgcoord/pgcoord/internal/otelx"
)

// Causes of a lost lease (pgcoord.lock.cause).
const (
	// causeExpired: the lease's TTL passed without Extend or renewal.
	causeExpired = "expired"
	// causeNotHeld: Extend found the lease gone at the server (expired there
	// and taken over by another holder).
	causeNotHeld = "not_held"
	// causeLiveness: the instance's liveness session ended (or ended while
	// the grant was in flight).
	causeLiveness = "liveness"
)

// Outcomes of an acquisition (pgcoord.lock.outcome).
var outcomes = [...]string{"granted", "locked", "timed_out", "cancelled", "error"}

// telemetry holds a Manager's instruments, created once in New. Grants,
// contention, hand-offs, designations and takeovers are observable counters over Stats;
// the rest are recorded where they happen.
type telemetry struct {
	wait, hold             metric.Float64Histogram
	lost, reconnects       metric.Int64Counter
	grants, contended      metric.Int64ObservableCounter
	handoffs, takeovers    metric.Int64ObservableCounter
	designated             metric.Int64ObservableCounter
	reg                    metric.Registration
	tracer                 trace.Tracer
	none                   metric.MeasurementOption
	outcome                [len(outcomes)]metric.MeasurementOption
	expired, notHeld, gone metric.MeasurementOption
}

func newTelemetry(m *Manager, mp metric.MeterProvider, tp trace.TracerProvider) *telemetry {
	meter := otelx.NewMeter(mp, "lock")
	cause := func(c string) metric.MeasurementOption { return otelx.Attrs(attribute.String("pgcoord.lock.cause", c)) }
	t := &telemetry{
		wait:       meter.Duration("acquire.duration", "Time an Acquire or TryAcquire call took, waiting included (pgcoord.lock.outcome)."),
		hold:       meter.Duration("hold.duration", "Time a grant was held, from grant to release or loss."),
		lost:       meter.Counter("lost", "{lease}", "Grants that ended other than by Release (pgcoord.lock.cause: expired, not_held, liveness)."),
		reconnects: meter.Counter("liveness.reconnects", "{reconnect}", "Liveness sessions re-established after the previous one was lost."),
		grants:     meter.ObservableCounter("grants", "{grant}", "Grants made to this instance, hand-offs and takeovers included."),
		contended:  meter.ObservableCounter("contended", "{attempt}", "Attempts that found the key held (each poll or wake-up of a waiter, each failed TryAcquire)."),
		handoffs:   meter.ObservableCounter("handoffs", "{grant}", "Grants passed by Release straight to a waiter of this instance."),
		takeovers:  meter.ObservableCounter("takeovers", "{grant}", "Grants that replaced a lease never released (expired, or its owner's session ended)."),
		designated: meter.ObservableCounter("designated", "{grant}", "Grants another instance's Release (or ForceRelease) passed to this instance as the first live one in the key's waiting FIFO."),
		tracer:     otelx.Tracer(tp, "lock"),
		none:       otelx.Attrs(),
		expired:    cause(causeExpired),
		notHeld:    cause(causeNotHeld),
		gone:       cause(causeLiveness),
	}
	for i, o := range outcomes {
		t.outcome[i] = otelx.Attrs(attribute.String("pgcoord.lock.outcome", o))
	}
	t.reg = meter.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		s := m.Stats()
		o.ObserveInt64(t.grants, s.Acquired)
		o.ObserveInt64(t.contended, s.Contended)
		o.ObserveInt64(t.handoffs, s.Handoffs)
		o.ObserveInt64(t.takeovers, s.ExpiredTakeovers)
		o.ObserveInt64(t.designated, s.Designated)
		return nil
	}, t.grants, t.contended, t.handoffs, t.takeovers, t.designated)
	return t
}

// start begins an acquisition of key: a pgcoord.lock.acquire span, and the
// returned func records its duration and outcome when called with the
// call's error.
func (t *telemetry) start(ctx context.Context, key string) (context.Context, func(error)) {
	begin := time.Now()
	ctx, span := t.tracer.Start(ctx, "pgcoord.lock.acquire", trace.WithAttributes(attribute.String("pgcoord.lock.key", key)))
	return ctx, func(err error) {
		t.acquired(ctx, begin, err)
		if err != nil {
			span.RecordError(err)
			span.SetStatus(codes.Error, "not acquired")
		}
		span.End()
	}
}

// acquired records an acquisition that began at begin and returned err.
func (t *telemetry) acquired(ctx context.Context, begin time.Time, err error) {
	i := 0
	var acqErr *LockAcquireError
	switch {
	case err == nil:
	case errors.As(err, &acqErr) && acqErr.Reason == ReasonLocked:
		i = 1
	case errors.As(err, &acqErr) && acqErr.Reason == ReasonTimedOut:
		i = 2
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		i = 3
	default:
		i = 4
	}
	t.wait.Record(ctx, time.Since(begin).Seconds(), t.outcome[i])
}

// ended records the end of a grant held since granted; cause is "" for a
// release.
func (t *telemetry) ended(granted time.Time, cause string) {
	ctx := context.Background()
	t.hold.Record(ctx, time.Since(granted).Seconds(), t.none)
	switch cause {
	case "":
	case causeExpired:
		t.lost.Add(ctx, 1, t.expired)
	case causeNotHeld:
		t.lost.Add(ctx, 1, t.notHeld)
	default:
		t.lost.Add(ctx, 1, t.gone)
	}
}
