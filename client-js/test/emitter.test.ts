import { describe, expect, it, vi } from 'vitest';
import { TypedEmitter } from '../src/index.js';
import { SerialQueue } from '../src/queue.js';

type Events = { ping: (n: number) => void; pong: () => void };

class Emitter extends TypedEmitter<Events> {
  fire<K extends keyof Events>(event: K, ...args: Parameters<Events[K]>): void {
    this.emit(event, ...args);
  }
}

describe('TypedEmitter', () => {
  it('calls listeners in order, once() only once, and counts them', () => {
    const e = new Emitter();
    const calls: string[] = [];
    e.on('ping', (n) => calls.push(`a${n}`));
    e.once('ping', (n) => calls.push(`b${n}`));
    expect(e.listenerCount('ping')).toBe(2);
    e.fire('ping', 1);
    e.fire('ping', 2);
    expect(calls).toEqual(['a1', 'b1', 'a2']);
    expect(e.listenerCount('ping')).toBe(1);
    expect(e.listenerCount('pong')).toBe(0);
  });

  it('a listener removing itself does not skip the next one', () => {
    const e = new Emitter();
    const second = vi.fn();
    const first = (): void => {
      e.off('pong', first);
    };
    e.on('pong', first).on('pong', second);
    e.fire('pong');
    expect(second).toHaveBeenCalledOnce();
  });
});

describe('SerialQueue', () => {
  it('runs tasks one at a time and survives a failing task', async () => {
    const q = new SerialQueue();
    const order: string[] = [];
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    const a = q.run(async () => {
      order.push('a:start');
      await held;
      order.push('a:end');
    });
    const b = q.run(async () => {
      order.push('b');
      throw new Error('b failed');
    });
    const c = q.run(async () => {
      order.push('c');
      return 3;
    });
    await Promise.resolve();
    expect(order).toEqual(['a:start']);
    release();
    await a;
    await expect(b).rejects.toThrow('b failed');
    await expect(c).resolves.toBe(3);
    expect(order).toEqual(['a:start', 'a:end', 'b', 'c']);
  });
});
