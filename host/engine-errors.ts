/** Reading the errors dockerode throws: the engine's HTTP status and its own message. */
interface EngineError {
  statusCode?: number;
  json?: { message?: string };
  message?: string;
}

export const status = (e: unknown): number | undefined => (e as EngineError)?.statusCode;
export const reason = (e: unknown): string =>
  (e as EngineError)?.json?.message ?? (e as Error)?.message ?? String(e);

