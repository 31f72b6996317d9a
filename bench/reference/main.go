// Command reference is the yardstick of `make bench`: a fiber v3 server
// whose handler does nothing and answers 200 with an empty body, on every
// method of /, plus GET /healthz. auth's throughput and latency targets
// (SPEC §7) are ratios to this server measured in the same run.
package main

import (
	"fmt"
	"os"

	"github.com/gofiber/fiber/v3"
)

func main() {
	port := os.Getenv("PORT")
	if port == "" {
		port = "3000"
	}
	app := fiber.New()
	app.Get("/healthz", func(c fiber.Ctx) error { return c.SendString("OK") })
	app.All("/", func(c fiber.Ctx) error { return nil })
	if err := app.Listen(":"+port, fiber.ListenConfig{DisableStartupMessage: true}); err != nil {
		fmt.Fprintln(os.Stderr, "reference:", err)
		os.Exit(1)
	}
}
