// Command resthello is the reference of scripts/rest-loadtest.sh: the bare
// net/http stack answering a fixed JSON body, so that the gateway's
// requests per second can be stated as a ratio to what this machine's
// loopback and HTTP server do in the same minutes.
package main

import (
	"log"
	"net/http"
	"os"
)

func main() {
	if len(os.Args) != 2 {
		log.Fatal("usage: resthello ADDR (a loopback address such as 127.0.0.1:19491)")
	}
	body := []byte(`{"hello":"world"}`)
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(body)
	})
	log.Fatal(http.ListenAndServe(os.Args[1], nil))
}
