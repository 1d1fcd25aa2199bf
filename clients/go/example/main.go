// meterd from Go, over gRPC: track with an idempotency key, retry it, send a batch, read the metrics,
// and decode the ErrorDetail of a refused call.
//
// Run ../generate.sh first, then ../run.sh. Configured by the environment:
//
//	METERD_GRPC_ADDR  host:port of the gRPC listener (default 127.0.0.1:50051)
//	METERD_KEY        a secret key (required)
//	METERD_CUSTOMER   the customer to track for (default: a new one per run)
package main

import (
	"context"
	"fmt"
	"os"
	"sort"
	"strconv"
	"time"
	"unicode"

	meterdv1 "github.com/meterd/meterd/gen/go/meterd/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func num(v float64) string { return strconv.FormatFloat(v, 'g', -1, 64) }

func run() error {
	addr := os.Getenv("METERD_GRPC_ADDR")
	if addr == "" {
		addr = "127.0.0.1:50051"
	}
	key := os.Getenv("METERD_KEY")
	if key == "" {
		return fmt.Errorf("METERD_KEY is not set")
	}
	customer := os.Getenv("METERD_CUSTOMER")
	if customer == "" {
		customer = fmt.Sprintf("cus_go_%d", time.Now().UnixNano())
	}

	conn, err := grpc.Dial(addr, grpc.WithInsecure())
	if err != nil {
		return err
	}
	defer conn.Close()
	meterd := meterdv1.NewMeteringServiceClient(conn)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+key)

	// Track with an idempotency key, then retry it: the retry counts nothing and has the same id.
	one := 1.0
	req := &meterdv1.TrackRequest{CustomerId: customer, FeatureKey: "api_calls", Amount: &one, IdempotencyKey: customer + "-req-1"}
	for _, label := range []string{"track", "retry"} {
		res, err := meterd.Track(ctx, req)
		if err != nil {
			return fmt.Errorf("%s: %w", label, err)
		}
		fmt.Printf("%s: event_id=%s decision=%s duplicate=%t consumed=%s\n",
			label, res.EventId, res.Decision, res.Duplicate, num(res.Usage.GetConsumed()))
	}

	// A batch: one result per event, in order; a bad event fails alone.
	two, half := 2.0, 0.5
	batch, err := meterd.TrackBatch(ctx, &meterdv1.TrackBatchRequest{Events: []*meterdv1.TrackRequest{
		{CustomerId: customer, FeatureKey: "api_calls", Amount: &two, IdempotencyKey: customer + "-req-2"},
		{CustomerId: customer, FeatureKey: "storage_gb", Amount: &half, IdempotencyKey: customer + "-req-3"},
		{CustomerId: customer, FeatureKey: "no_such_feature", IdempotencyKey: customer + "-req-4"},
	}})
	if err != nil {
		return fmt.Errorf("batch: %w", err)
	}
	for i, result := range batch.Results {
		switch outcome := result.Outcome.(type) {
		case *meterdv1.TrackResult_Tracked:
			fmt.Printf("batch[%d]: tracked decision=%s duplicate=%t\n", i, outcome.Tracked.Decision, outcome.Tracked.Duplicate)
		case *meterdv1.TrackResult_Error:
			e := outcome.Error
			fmt.Printf("batch[%d]: error code=%s field=%s reason=%s\n", i, e.Code, e.Field, e.Reason)
		}
	}

	metrics, err := meterd.GetMetrics(ctx, &meterdv1.GetMetricsRequest{CustomerId: customer})
	if err != nil {
		return fmt.Errorf("metrics: %w", err)
	}
	sort.Slice(metrics.Metrics, func(i, j int) bool { return metrics.Metrics[i].FeatureKey < metrics.Metrics[j].FeatureKey })
	for _, m := range metrics.Metrics {
		limit := num(m.Limit)
		if m.Unlimited {
			limit = "unlimited"
		}
		fmt.Printf("metric[%s]: consumed=%s limit=%s\n", m.FeatureKey, num(m.Consumed), limit)
	}

	// A refused call: the status code, and the ErrorDetail that grpc-go decodes from grpc-status-details-bin.
	_, err = meterd.Track(ctx, &meterdv1.TrackRequest{CustomerId: customer, FeatureKey: "no_such_feature"})
	if err == nil {
		return fmt.Errorf("refused: the call succeeded")
	}
	st := status.Convert(err)
	for _, d := range st.Details() {
		if detail, ok := d.(*meterdv1.ErrorDetail); ok {
			fmt.Printf("refused: code=%s reason=%s field=%s rule=%s\n", codeName(st.Code().String()), detail.Reason, detail.Field, detail.Rule)
			return nil
		}
	}
	return fmt.Errorf("refused: %s without an ErrorDetail (details: %v)", st.Code(), st.Details())
}

// codeName spells a gRPC code as the protocol does ("InvalidArgument" -> "INVALID_ARGUMENT").
func codeName(camel string) string {
	out := make([]rune, 0, len(camel)+4)
	for i, r := range camel {
		if i > 0 && unicode.IsUpper(r) && unicode.IsLower(rune(camel[i-1])) {
			out = append(out, '_')
		}
		out = append(out, unicode.ToUpper(r))
	}
	return string(out)
}
