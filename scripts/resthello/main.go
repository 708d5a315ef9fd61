// Command resthello is the reference of scripts/rest-loadtest.sh: the bare
// net/http stack answering a fixed JSON body, so that the gateway's
// requests per second and latency can be stated as ratios to what this
// machine's loopback and HTTP server do in the same minutes. /metrics has
// the process collector only, so that `cryptostream loadtest rest` reports
// the reference's CPU as it does the gateway's.
package main

import (
	"log"
	"net/http"
	"os"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

func main() {
	if len(os.Args) != 2 {
		log.Fatal("usage: resthello ADDR (a loopback address such as 127.0.0.1:19491)")
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	body := []byte(`{"hello":"world"}`)
	http.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(body)
	})
	log.Fatal(http.ListenAndServe(os.Args[1], nil))
}
