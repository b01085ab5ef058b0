// Parse an OpenRouter-style event stream that arrives in arbitrary pieces.
#include <frugal/sse_parser.hpp>

#include <iostream>
#include <string_view>

int main()
{
    // The bytes a socket might deliver, split anywhere (here, inside a line and inside a CRLF).
    const std::string_view pieces[] = {
        ": OPENROUTER PROCESSING\r\n\r\ndata: {\"choices\":[{\"delta\":{\"content\":\"Hel",
        "lo\"}}]}\r",
        "\n\r\ndata: [DONE]\r\n\r\n",
    };

    frugal::sse_parser parser; // limits default to 8 MiB per line and per event
    for (const auto piece : pieces) {
        // Hand over the next piece; it must stay valid until next() returns no event.
        parser.feed(piece);

        // Take every event the input completes; keep-alive comments never show up.
        while (auto event = parser.next()) {
            if (event->data == "[DONE]")
                std::cout << "end of stream\n";
            else
                std::cout << event->type << ": " << event->data << '\n';
        }

        // A line or event past the limits fails the parser until reset().
        if (parser.error()) {
            std::cerr << "bad stream: " << parser.error().message() << '\n';
            return 1;
        }
    }
}
