// What the local master's faces (SLAP in proxy-server.ts, the JSON API in proxy-jsonrpc.ts)
// share: types only.
import type { PyDict } from './slap-protocol.ts'

/** One instance request, from SLAP's requestComputerPartition or the JSON API's software_instance. */
export interface InstanceRequest {
  softwareRelease: string
  softwareType: string
  title: string
  parameters: PyDict
  filter: PyDict
  state: string | null
  shared: boolean
  requestedBy: string
}
