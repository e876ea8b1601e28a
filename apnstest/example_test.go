package apnstest_test

import (
	"fmt"
	"sync"
	"time"

	apns "github.com/Kwik-messenger/apns-go"
	"github.com/Kwik-messenger/apns-go/apnstest"
)

// A test of your own code: start the mock gateway, point the client at it, have it reject a
// token, and check that your callback heard of it. In a real test, the prints are t.Errorf.
func Example() {
	srv := apnstest.NewServer()
	defer srv.Close()
	badToken := "bad0000000000000000000000000000000000000000000000000000000000001"
	srv.RejectToken(badToken, 8) // status 8: invalid token

	cert, key := apnstest.ClientCertPEM() // the mock requires a client certificate, as Apple did
	client, err := apns.CreateClient(srv.Addr, cert, key, false,
		apns.WithTLSConfig(srv.ClientTLSConfig())) // trust the mock's certificate
	if err != nil {
		panic(err)
	}
	var mu sync.Mutex
	var rejected []string
	client.SetCallback(func(m *apns.Message, code uint8) {
		mu.Lock()
		defer mu.Unlock()
		rejected = append(rejected, fmt.Sprintf("%x… status %d", m.Token[:2], code))
	})
	if err := client.Start(1); err != nil {
		panic(err)
	}
	payload := map[string]interface{}{"aps": map[string]interface{}{"alert": "hello"}}
	for _, token := range []string{
		"0000000000000000000000000000000000000000000000000000000000000001",
		badToken,
		"0000000000000000000000000000000000000000000000000000000000000002",
	} {
		if err := client.Send(token, time.Now().Add(time.Hour), apns.PRIORITY_IMMEDIATE, payload); err != nil {
			panic(err)
		}
	}
	client.Stop() // returns once every notification is delivered or reported

	mu.Lock()
	fmt.Println("rejected:", rejected)
	mu.Unlock()
	fmt.Println("gateway accepted:", srv.Count(), "rejected:", len(srv.Rejected()))
	// Output:
	// rejected: [bad0… status 8]
	// gateway accepted: 2 rejected: 1
}
