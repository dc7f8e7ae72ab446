// UART sensor injector: plays bytes loaded by the rig host onto the node's sensor RX pin.
//
// The rig stands in for a particulate sensor (e.g. SDS011 frames at 9600 8N1): the host
// pushes a frame into the FIFO and the injector sends it with exact bit timing, so the
// firmware's UART driver and frame parser are exercised on real signal timing.
`timescale 1ns / 1ps
`default_nettype none

module uart_injector #(
    parameter integer CLKS_PER_BIT = 104,  // clock / baud, e.g. 1 MHz / 9600
    parameter integer DEPTH_BITS = 4       // FIFO of 2**DEPTH_BITS bytes
) (
    input  wire       clk,
    input  wire       rst,
    input  wire       wr_en,
    input  wire [7:0] wr_data,
    output wire       full,
    output wire       idle,
    output reg        tx
);
    localparam integer DEPTH = 1 << DEPTH_BITS;
    reg [7:0] fifo [0:DEPTH-1];
    reg [DEPTH_BITS:0] head, tail;  // one extra bit tells full from empty
    wire empty = head == tail;
    assign full = (head[DEPTH_BITS-1:0] == tail[DEPTH_BITS-1:0]) && (head[DEPTH_BITS] != tail[DEPTH_BITS]);

    reg        sending;
    reg [9:0]  shift;      // stop bit, 8 data bits LSB first, start bit
    reg [3:0]  bits_left;
    reg [$clog2(CLKS_PER_BIT+1)-1:0] clocks;
    assign idle = empty && !sending;

    always @(posedge clk) begin
        if (rst) begin
            head <= 0;
            tail <= 0;
            sending <= 1'b0;
            tx <= 1'b1;
            clocks <= 0;
            bits_left <= 0;
        end else begin
            if (wr_en && !full) begin
                fifo[head[DEPTH_BITS-1:0]] <= wr_data;
                head <= head + 1'b1;
            end
            if (!sending) begin
                tx <= 1'b1;
                if (!empty) begin
                    shift <= {1'b1, fifo[tail[DEPTH_BITS-1:0]], 1'b0};
                    tail <= tail + 1'b1;
                    sending <= 1'b1;
                    bits_left <= 4'd10;
                    clocks <= 0;
                end
            end else if (clocks == 0) begin
                if (bits_left == 0) begin
                    sending <= 1'b0;
                end else begin
                    tx <= shift[0];
                    shift <= {1'b1, shift[9:1]};
                    bits_left <= bits_left - 1'b1;
                    clocks <= CLKS_PER_BIT - 1;
                end
            end else begin
                clocks <= clocks - 1'b1;
            end
        end
    end
endmodule

`default_nettype wire
