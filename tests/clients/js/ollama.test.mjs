// ollama-js (npm `ollama`) against a live Corral, as a Node app would use it: the host from
// OLLAMA_HOST (host:port, no scheme, as Ollama's own variable is written) and a bearer key.
// Run by tests/integration/test_ollama_js.py, which starts the server (with CORRAL_API_KEY) and
// a loopback docker-registry (REGISTRY_HOST); `node --test` reports each case.
import assert from 'node:assert/strict'
import { test } from 'node:test'
import { Ollama } from 'ollama'

const host = process.env.OLLAMA_HOST
const key = process.env.CORRAL_KEY
const registry = process.env.REGISTRY_HOST
const ollama = new Ollama({ host, headers: { Authorization: `Bearer ${key}` } })
const MODEL = 'gemma3:270m'
const EMBED = 'all-minilm'
const GREEDY = { temperature: 0, num_predict: 8 }

async function metric(name) {
  const r = await fetch(`http://${host}/metrics`, { headers: { Authorization: `Bearer ${key}` } })
  const text = await r.text()
  return text.split('\n').filter((l) => l.startsWith(name + '{'))
    .reduce((sum, l) => sum + Number(l.split(' ').pop()), 0)
}

async function running() {
  const vllm = await metric('vllm:num_requests_running')
  return vllm || metric('corral_sequences_running')
}

async function waitRunning(want, seconds = 60) {
  const end = Date.now() + seconds * 1000
  let now
  while (Date.now() < end) {
    if ((now = await running()) === want) return
    await new Promise((r) => setTimeout(r, 100))
  }
  assert.fail(`running is ${now}, not ${want}, after ${seconds} s`)
}

async function collect(iterator) {
  const parts = []
  for await (const part of iterator) parts.push(part)
  return parts
}

test('a client without the key is refused', async () => {
  const anonymous = new Ollama({ host })
  await assert.rejects(anonymous.list(), (err) => err.status_code === 401)
})

test('list, show and version', async () => {
  const { models } = await ollama.list()
  const names = models.map((m) => m.model)
  assert.ok(names.includes('gemma3:270m') && names.includes('all-minilm:latest'), names.join())
  const show = await ollama.show({ model: MODEL })
  assert.ok(show.capabilities.includes('completion'))
  assert.equal(show.details.family, 'gemma3')
  assert.ok(show.model_info && show.template && show.modelfile)
  assert.match((await ollama.version()).version, /\d/)
})

test('generate, streamed and not', async () => {
  const whole = await ollama.generate({ model: MODEL, prompt: 'The capital of France is', options: GREEDY })
  assert.ok(whole.done && whole.response && whole.eval_count === 8)
  const parts = await collect(await ollama.generate({
    model: MODEL, prompt: 'The capital of France is', options: GREEDY, stream: true,
  }))
  assert.equal(parts.at(-1).done, true)
  assert.equal(parts.map((p) => p.response).join(''), whole.response)
})

test('chat, streamed and not', async () => {
  const messages = [{ role: 'user', content: 'Say hello.' }]
  const whole = await ollama.chat({ model: MODEL, messages, options: GREEDY })
  assert.equal(whole.message.role, 'assistant')
  const parts = await collect(await ollama.chat({ model: MODEL, messages, options: GREEDY, stream: true }))
  assert.equal(parts.at(-1).done, true)
  assert.equal(parts.map((p) => p.message.content).join(''), whole.message.content)
})

test('abort of a stream frees the sequence', async () => {
  const stream = await ollama.generate({
    model: MODEL, prompt: 'Count from 1 to 100000: 1, 2, 3,', stream: true,
    options: { temperature: 0, num_predict: 20000 },
  })
  let seen = 0
  await assert.rejects(async () => {
    for await (const _ of stream) {
      if (++seen === 3) {
        assert.equal(await running(), 1)
        stream.abort()
      }
    }
  }, (err) => err.name === 'AbortError')
  await waitRunning(0)
})

test('embed', async () => {
  const { embeddings } = await ollama.embed({ model: EMBED, input: ['a cat', 'a dog'] })
  assert.equal(embeddings.length, 2)
  assert.equal(embeddings[0].length, 384)
})

test('ps shows the loaded models', async () => {
  const { models } = await ollama.ps()
  assert.ok(models.some((m) => m.model === MODEL), JSON.stringify(models))
})

test('create, copy, push, delete and pull back with progress', async () => {
  const made = 'js-made:latest'
  const statuses = (await collect(await ollama.create({
    model: made, from: EMBED, stream: true,
  }))).map((p) => p.status)
  assert.equal(statuses.at(-1), 'success')
  const remote = `${registry}/library/js-made:latest`
  assert.equal((await ollama.copy({ source: made, destination: remote })).status, 'success')
  const pushed = await collect(await ollama.push({ model: remote, insecure: true, stream: true }))
  assert.equal(pushed.at(-1).status, 'success')
  await ollama.delete({ model: remote })
  await ollama.delete({ model: made })
  let names = (await ollama.list()).models.map((m) => m.model)
  assert.ok(!names.includes(made) && !names.includes(remote), names.join())

  const progress = await collect(await ollama.pull({ model: remote, insecure: true, stream: true }))
  const kinds = progress.map((p) => p.status)
  assert.equal(kinds[0], 'pulling manifest')
  assert.equal(kinds.at(-1), 'success')
  const layer = progress.find((p) => p.digest && p.total > 0)
  assert.ok(layer, JSON.stringify(progress.slice(0, 5)))
  const finished = progress.filter((p) => p.digest === layer.digest).at(-1)
  assert.equal(finished.completed, finished.total)
  names = (await ollama.list()).models.map((m) => m.model)
  assert.ok(names.includes(remote), names.join())
  const { embeddings } = await ollama.embed({ model: remote, input: 'a cat' })
  assert.equal(embeddings[0].length, 384)
  await ollama.delete({ model: remote })
})

test('errors are ResponseErrors with the status', async () => {
  await assert.rejects(ollama.show({ model: 'no-such-model' }),
    (err) => err.status_code === 404 && /not found/.test(err.error))
})
